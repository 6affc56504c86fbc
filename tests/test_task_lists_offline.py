"""Every configured capabilities and safety task is built offline as far as it allows: its
name, arguments and grader resolve, and where it needs a dataset from the hub (or a URL)
that cannot be reached, the error names the task and the dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import compose_cfg

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGURED = [(suite, key, str(t.task))
              for suite in ("capabilities", "safety")
              for key, t in compose_cfg("eval", ["run_dir=/runs/x", "eval=paper"]).eval[suite].tasks.items()]

# What each configured task downloads; an offline build must name it.
DATASET_OF = {
    "inspect_evals/mmlu_0_shot": "cais/mmlu",
    "inspect_evals/arc_challenge": "allenai/ai2_arc",
    "inspect_evals/hellaswag": "Rowan/hellaswag",
    "inspect_evals/gsm8k": "openai/gsm8k",
    "inspect_evals/ifeval": "google/IFEval",
    "inspect_evals/xstest": "walledai/XSTest",
    "inspect_evals/strong_reject": "strongreject_dataset.csv",
}

BUILD_ALL = r"""
import json, sys
from midtrain.evals.suites import plan_suites
from midtrain.evals.task_list import TaskBuildError
from tests.conftest import compose_cfg
out = {}
for suite in ("capabilities", "safety"):
    cfg = compose_cfg("eval", ["run_dir=/runs/x", f"eval={suite}", "grader_models=[mockllm/model]"])
    for key in list(cfg.eval[suite].tasks):
        one = compose_cfg("eval", ["run_dir=/runs/x", f"eval={suite}", "grader_models=[mockllm/model]"])
        one.eval[suite].tasks = {key: one.eval[suite].tasks[key]}
        try:
            [p] = plan_suites(one)
            out[f"{suite}.{key}"] = {"built": True, "samples": len(p.task.dataset)}
        except TaskBuildError as e:
            out[f"{suite}.{key}"] = {"built": False, "message": str(e)}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def offline_builds(tmp_path_factory):
    home = tmp_path_factory.mktemp("hf_home")  # an empty cache: nothing can come from it
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(home),
           "INSPECT_EVALS_CACHE_PATH": str(home / "inspect_evals"),
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", BUILD_ALL], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.parametrize("suite,key,task", CONFIGURED, ids=[f"{s}.{k}" for s, k, _ in CONFIGURED])
def test_configured_task_builds_offline_or_names_its_dataset(offline_builds, suite, key, task):
    result = offline_builds[f"{suite}.{key}"]
    if result["built"]:  # the task ships its data (or found it): it must hold samples
        assert result["samples"] > 0
        return
    message = result["message"]
    assert f"eval.{suite}.tasks.{key} ({task})" in message
    assert f"'~eval.{suite}.tasks.{key}'" in message  # how to leave it out
    if task == "inspect_evals/ifeval" and "could not be downloaded" not in message:
        # ifeval's scorer needs a package that is installed from GitHub, not from PyPI
        assert "instruction_following_eval" in message
    else:
        assert DATASET_OF[task] in message and "could not be downloaded" in message
