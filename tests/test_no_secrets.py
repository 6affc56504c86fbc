"""Secrets never reach disk: every app run with canaries in the environment and on the command line.

The canaries sit in every secret environment variable the project knows, and on the command
line as the values of secret-named keys (`+logger.api_key=...`, `+generator.model_args.api_key=...`),
inside the evaluate stage's settings (`+stages.evaluate.model.model_args.api_key=...`) and as token-shaped values under
harmless key names (`sk-...`, `hf_...`, a 40-hex W&B key). Afterwards no file anywhere under
the test's directory (runs root, corpus folder, report folder, Hydra's output, W&B's
directories, Inspect logs, checkpoints and weights: binary files included) and no console
output contains any of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from midtrain.tracking.secrets import SECRET_ENV_VARS

pytestmark = [pytest.mark.wandb, pytest.mark.slow]  # five apps in subprocesses: minutes on a small CPU

MARK = "CANARYq7Zx"  # every plain canary contains this
SK = "sk-ant-api03-" + MARK + "SKshape0123456789abcdefABCDEF"
HF = "hf_" + MARK + "HFshape0123456789abcdefgh"
WB40 = "c0ffee" + "0123456789abcdef0123456789abcdef01"  # a W&B key's shape: 40 hex digits
assert len(WB40) == 40
NEEDLES = [MARK.encode(), WB40.encode(), WB40.upper().encode()]


def _canary(i: int) -> str:
    return f"{MARK}{i:02d}secretvalue"


def _file_class(path: Path) -> str:
    name = path.name
    if ".hydra" in path.parts or name in ("multirun.yaml",):
        return "hydra-output"
    if "wandb" in path.parts or name.endswith(".wandb"):
        return "wandb:" + (path.suffix or name)
    if path.suffix in (".log", ".txt") or "logs" in path.parts or ".hydra_logs" in path.parts:
        return "log" + path.suffix
    return path.suffix or name


def _app(args: list[str], env: dict, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-c", _LAUNCH, *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{args[0]} failed:\n{out[-4000:]}"
    return out


# Run an entry point exactly as its console script does (sys.argv[0] = the script name).
_LAUNCH = (
    "import sys, importlib; name = sys.argv[1]; sys.argv = ['midtrain-' + name] + sys.argv[2:]; "
    "importlib.import_module('midtrain.' + name).main()"
)


def test_no_canary_in_any_file_or_output(tmp_path: Path):
    runs, corpus, report = tmp_path / "runs", tmp_path / "corpus", tmp_path / "report"
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV_VARS}
    env.update({name: _canary(i) for i, name in enumerate(SECRET_ENV_VARS)})
    env.update(
        WANDB_MODE="offline", WANDB_DIR=str(tmp_path / "wandb_dir"), WANDB_CACHE_DIR=str(tmp_path / "wandb_cache"),
        WANDB_CONFIG_DIR=str(tmp_path / "wandb_config"), WANDB_DATA_DIR=str(tmp_path / "wandb_data"),
        WANDB_SILENT="true", HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1",
        INSPECT_LOG_DIR=str(tmp_path / "inspect_logs"), HOME=str(tmp_path / "home"),
        MIDTRAIN_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=os.pathsep.join(sys.path),
    )
    (tmp_path / "home").mkdir()
    console = []
    console.append(_app([
        "generate", "generator=template", "num_docs=8", f"out_dir={corpus}", "progress=false",
        f"+generator.model_args.api_key={_canary(90)}", f"+generator.note={SK}",
        f"+generator.model_args.headers=[Authorization: Bearer {HF}]",
    ], env, tmp_path))
    console.append(_app([
        "train", "debug=smoke", f"paths.runs_root={runs}", "sweep_name=t", "logger=wandb",
        "corpus.num_docs=8", "data.seq_len=128", f"+logger.api_key={_canary(91)}",
        f"+trainer.note={WB40}", f"+logger.tags=[{HF},plain]",
    ], env, tmp_path))
    console.append(_app([
        "pipeline", "experiment=treatment", "debug=smoke", "instruct.samples=4", "corpus.num_docs=8",
        "data.seq_len=128", f"paths.runs_root={runs}", "sweep_name=p", "logger=wandb",
        f"+logger.api_key={_canary(92)}",
        f"+stages.evaluate.model.model_args.api_key={_canary(93)}", f"+stages.evaluate.model.model_args.note={SK}",
    ], env, tmp_path))
    final = next(p.parent for p in (runs / "p").glob("*/instruct/DONE"))
    console.append(_app([
        "eval", f"run_dir={final}", "eval=probe", f"+model.model_args.api_key={_canary(94)}",
        f"+note={HF}", "force=true",
    ], env, tmp_path))
    console.append(_app([
        "report", f"sweep_dirs=[{runs / 'p'}]", f"out_dir={report}", "plots.enabled=false",
        f"+wandb.api_key={_canary(95)}", f"+note={SK}",
    ], env, tmp_path))

    searched: Counter = Counter()
    hits: Counter = Counter()
    found = []
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()):
        data = path.read_bytes()
        cls = _file_class(path.relative_to(tmp_path))
        searched[cls] += 1
        if any(n in data for n in NEEDLES):
            hits[cls] += 1
            found.append(str(path.relative_to(tmp_path)))
    for i, text in enumerate(console):
        searched["console"] += 1
        if any(n.decode() in text for n in NEEDLES):
            hits["console"] += 1
            found.append(f"console output of app {i}")
    # The searched classes must include every place the issue names.
    assert searched["hydra-output"] > 0 and any(c.startswith("wandb:") for c in searched)
    assert any(c.startswith("log") for c in searched)
    print("\nfile classes searched (files, hits):")
    for cls in sorted(searched):
        print(f"  {cls}: {searched[cls]} files, {hits[cls]} hits")
    assert not found, f"canary found in {len(found)} file(s): {found}"
