"""Typed config groups: `conf/model/*` and `conf/corpus/*` extend a schema registered in
Hydra's ConfigStore, so every key has one default and one type, checked at composition.

The resolved model and corpus node of every option, in the primary configs that use it, is
pinned in `fixtures/config_nodes.json`: these nodes enter the run hash, so a change here
renames run directories. The file was written by running this module on the configs as they
were before the schema existed; after an intended, explained change regenerate it with

    python -m tests.test_config_schema > tests/fixtures/config_nodes.json
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from midtrain.conf_schema import SCHEMAS
from midtrain.paths import CONF_DIR
from tests.conftest import compose_cfg

GOLDEN = Path(__file__).parent / "fixtures" / "config_nodes.json"
GROUPS = ("model", "corpus")
# The primary configs (and the deltas) each option is composed with.
VARIANTS = {"train": ("train",), "smoke": ("train", "debug=smoke"), "control": ("pipeline", "experiment=control")}
FIXED = ("paths.runs_root=/runs", "paths.corpora_root=/corpora", "paths.cache_dir=/cache")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def resolved_node(group: str, option: str, variant: str) -> dict:
    app, *extra = VARIANTS[variant]
    cfg = compose_cfg(app, [f"{group}={option}", *FIXED, *extra])
    return OmegaConf.to_container(cfg[group], resolve=True)


def resolved_nodes() -> dict:
    return {f"{g}={o} {v}": resolved_node(g, o, v) for g in GROUPS for o in _options(g) for v in VARIANTS}


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
@pytest.mark.parametrize("app", ["train", "pipeline"])
def test_every_model_and_corpus_option_composes_on_its_schema(tmp_path, app, group, option):
    cfg = compose_cfg(app, [f"{group}={option}", f"paths.runs_root={tmp_path}"])
    assert OmegaConf.get_type(cfg[group]) in SCHEMAS[group].values(), f"{group}/{option}.yaml lists no schema"
    text = (CONF_DIR / group / f"{option}.yaml").read_text()
    defaults = OmegaConf.create(text).get("defaults") or []
    assert defaults and (defaults[0] in SCHEMAS[group] or (CONF_DIR / group / f"{defaults[0]}.yaml").is_file()), \
        f"{group}/{option}.yaml: its defaults list starts with neither a schema nor an option extending one"


_GOLDEN = json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("key", sorted(_GOLDEN))
def test_the_resolved_node_of_every_option_is_what_it_was(key):
    """Every value, and its type (3000 vs 3000.0 vs "3000"), as the run hash sees it."""
    spec, variant = key.split(" ")
    group, option = spec.split("=")
    if not (CONF_DIR / group / f"{option}.yaml").is_file():
        pytest.skip(f"{group}/{option}.yaml was removed")
    got = resolved_node(group, option, variant)
    assert json.dumps(got, sort_keys=True) == json.dumps(_GOLDEN[key], sort_keys=True)


def _option(tmp_path: Path, group: str, body: str) -> list[str]:
    """An extra option `<group>/mine` in a config dir of its own, and the overrides that select it."""
    (tmp_path / "conf" / group).mkdir(parents=True)
    (tmp_path / "conf" / group / "mine.yaml").write_text(body)
    return [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", f"{group}=mine", f"paths.runs_root={tmp_path}"]


@pytest.mark.parametrize("group,body,key,why", [
    ("model", "name: m\nsource: config\nhidden_size: 64\n", "model.hidden_size", "not in 'ModelConfig'"),
    ("model", "name: m\nsource: config\nconfig: 64\n", "model.config", "Cannot assign int"),
    ("model", "name: m\nsource: config\ntokenizer: [a, b]\n", "model.tokenizer", "to string"),
    ("corpus", "name: c\nnum_doc: 10\n", "corpus.num_doc", "not in 'CorpusConfig'"),
    ("corpus", "name: c\nnum_docs: lots\n", "corpus.num_docs", "could not be converted to Integer"),
    ("corpus", "name: c\ndrop_duplicates: maybe\n", "corpus.drop_duplicates", "not a valid bool"),
])
def test_a_bad_key_or_type_in_an_option_fails_at_composition_naming_it(tmp_path, group, body, key, why):
    overrides = _option(tmp_path, group, "defaults:\n  - _schema\n  - _self_\n" + body)
    with pytest.raises(ConfigCompositionException) as e:
        compose_cfg("train", overrides)
    msg = f"{e.value} {e.value.__cause__}"
    assert f"full_key: {key}" in msg and f"{group}/mine" in msg and why in msg, msg


@pytest.mark.parametrize("override,key", [
    ("corpus.num_docs=lots", "corpus.num_docs"),
    ("corpus.pool_size=big", "corpus.pool_size"),
    ("corpus.drop_duplicates=maybe", "corpus.drop_duplicates"),
    ("model.dtype=[float32]", "model.dtype"),
])
def test_an_override_of_the_wrong_type_fails_at_composition_naming_the_key(tmp_path, override, key):
    with pytest.raises(ConfigCompositionException, match=f"Error merging override {key}="):
        compose_cfg("pipeline", [override, f"paths.runs_root={tmp_path}"])


def test_the_entry_point_refuses_a_bad_option_before_any_work(tmp_path):
    """The schemas are registered on the path every entry point takes (importing the package)."""
    overrides = _option(tmp_path, "model", "defaults:\n  - _schema\n  - _self_\nname: m\nsource: config\nlayers: 2\n")
    proc = subprocess.run([str(Path(sys.executable).parent / "midtrain-pipeline"), *overrides, "sweep_name=bad"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode != 0
    assert "full_key: model.layers" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "bad").exists()


if __name__ == "__main__":
    json.dump(resolved_nodes(), sys.stdout, indent=2, sort_keys=True)
    print()
