"""What a run directory holds: DONE last, atomic JSON, merged metrics, checkpoints, and no
secret under a token-like key."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from midtrain.tracking import RunDir, atomic_write_json, atomic_write_text, read_json, redact_config
from midtrain.tracking.nested import merge
from midtrain.tracking.secrets import REDACTED
from midtrain.train import train


def test_done_is_written_after_metrics_and_the_hf_export(smoke_cfg, monkeypatch):
    cfg = smoke_cfg("trainer.max_steps=1", "sweep_name=done_order")
    seen = []
    mark_done = RunDir.mark_done

    def spy(self: RunDir, *args, **kwargs) -> None:
        seen.append({
            "metrics": self.metrics_path.exists(),
            "hf_config": (self.hf / "config.json").exists(),
            "hf_weights": (self.hf / "model.safetensors").exists(),
            "hf_tokenizer": (self.hf / "tokenizer.json").exists(),
        })
        mark_done(self, *args, **kwargs)

    monkeypatch.setattr(RunDir, "mark_done", spy)
    metrics = train(cfg)
    # DONE is the last thing written: whoever finds it may rely on everything else.
    assert seen == [{"metrics": True, "hf_config": True, "hf_weights": True, "hf_tokenizer": True}]
    run = RunDir.from_cfg(cfg)
    assert run.is_done()
    assert json.loads(run.metrics_path.read_text()) == metrics
    assert run.done_path.stat().st_mtime_ns >= run.metrics_path.stat().st_mtime_ns


@pytest.mark.parametrize("key", ["hf_token", "auth_token", "token", "HF_TOKEN", "api_key", "wandb_api_key",
                                 "client_secret", "password", "auth", "access_token"])
def test_token_like_keys_are_redacted_at_any_depth(key):
    cfg = {key: "s3cr3t-value", "model": {key: "s3cr3t-value"}, "graders": [{key: "s3cr3t-value"}]}
    out = redact_config(cfg)
    assert out == {key: REDACTED, "model": {key: REDACTED}, "graders": [{key: REDACTED}]}
    assert "s3cr3t-value" not in json.dumps(out)


@pytest.mark.parametrize("key", ["tokens_per_step", "max_tokens", "num_tokens", "max_doc_tokens",
                                 "tokenizer", "pad_token", "bos_token", "eos_token", "tokens"])
def test_counts_and_tokenizer_settings_that_look_like_tokens_are_kept(key):
    assert redact_config({"data": {key: 4096}}) == {"data": {key: 4096}}


def test_empty_secrets_stay_empty_and_the_input_is_not_changed():
    cfg = {"hf_token": None, "api_key": "", "token": "abc"}
    assert redact_config(cfg) == {"hf_token": None, "api_key": "", "token": REDACTED}
    assert cfg["token"] == "abc"


def test_secret_environment_values_are_scrubbed_from_strings(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijkl")
    out = redact_config({"note": "pushed with hf_abcdefghijkl today", "n": 3})
    assert out == {"note": f"pushed with {REDACTED} today", "n": 3}


def test_layout_of_a_run_directory(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.config_path == tmp_path / "r" / "config.yaml"
    assert run.checkpoints == tmp_path / "r" / "checkpoints"
    assert run.last_checkpoint == tmp_path / "r" / "checkpoints" / "last.ckpt"
    assert run.hf == tmp_path / "r" / "hf"
    assert run.eval_dir == tmp_path / "r" / "eval"
    assert run.metrics_path == tmp_path / "r" / "metrics.json"
    assert run.done_path == tmp_path / "r" / "DONE"
    assert repr(run) == f"RunDir({str(tmp_path / 'r')!r})"


def test_run_dir_from_the_config_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = RunDir.from_cfg(OmegaConf.create({"run_dir": "runs/s/r"}))
    assert run.path == tmp_path / "runs" / "s" / "r" and run.path.is_absolute()


def test_atomic_writes_leave_no_temp_files_and_replace_whole(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_json(target, {"a": 1, "b": [1.5, "x"]})
    assert json.loads(target.read_text()) == {"a": 1, "b": [1.5, "x"]}
    assert target.read_text().endswith("\n") and '\n  "a": 1' in target.read_text()  # indented
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}"
    assert os.listdir(target.parent) == ["a.json"]


@pytest.mark.parametrize("bad,where", [
    ({"train": {"loss": float("nan")}}, "train.loss"),
    ({"xs": [1.0, float("inf")]}, r"xs\[1\]"),
    ({"a": [{"b": -float("inf")}]}, r"a\[0\].b"),
    (float("nan"), "<root>"),
])
def test_non_finite_values_are_refused_with_their_place(tmp_path, bad, where):
    target = tmp_path / "m.json"
    with pytest.raises(ValueError, match=rf"non-finite value .* at '{where}'"):
        atomic_write_json(target, bad)
    assert not target.exists() and os.listdir(tmp_path) == []


def test_a_failed_write_keeps_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "m.json"
    atomic_write_json(target, {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert os.listdir(tmp_path) == ["m.json"]


def test_corrupt_json_names_the_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"a": ')
    with pytest.raises(ValueError, match=rf"{path}: not valid JSON"):
        read_json(path)


def test_deep_merge_merges_dicts_and_replaces_the_rest():
    base = {"a": {"x": 1, "y": {"p": 1}}, "b": [1], "c": 1}
    merged = merge(base, {"a": {"y": {"q": 2}, "z": 3}, "b": [2], "c": {"n": 1}})
    assert merged == {"a": {"x": 1, "y": {"p": 1, "q": 2}, "z": 3}, "b": [2], "c": {"n": 1}}
    assert base == {"a": {"x": 1, "y": {"p": 1}}, "b": [1], "c": 1}  # not changed in place


def test_metrics_update_and_done_marker(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.read_metrics() == {} and not run.is_done()
    run.write_metrics({"run_id": "r", "train": {"loss": 1.0}})
    merged = run.update_metrics({"eval": {"anima": {"overall_mean": 0.5}}, "train": {"steps": 3}})
    assert merged == {"run_id": "r", "train": {"loss": 1.0, "steps": 3}, "eval": {"anima": {"overall_mean": 0.5}}}
    assert run.read_metrics() == merged
    run.mark_done("abc12345")
    assert run.is_done() and json.loads(run.done_path.read_text())["hash"] == "abc12345"
    assert run.done_hash() == "abc12345"
    run.done_path.unlink()
    assert not run.is_done()


def test_saved_config_is_resolved_and_without_secrets(tmp_path):
    cfg = OmegaConf.create({"a": 2, "b": "${a}", "logger": {"api_key": "k-123456789"}})
    run = RunDir(tmp_path / "r")
    run.save_config(cfg)
    saved = OmegaConf.load(run.config_path)
    assert saved.b == 2 and saved.logger.api_key == "<redacted>"


def test_latest_checkpoint_prefers_last_then_the_newest(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.latest_checkpoint() is None
    run.checkpoints.mkdir(parents=True)
    old, mid, new = (run.checkpoints / f"step000000{i}.ckpt" for i in (3, 1, 2))
    for p in (old, mid, new):
        p.write_text("x")
    now = time.time()
    os.utime(old, (now - 100, now - 100))
    os.utime(mid, (now - 50, now - 50))
    os.utime(new, (now, now))
    assert run.latest_checkpoint() == new  # by time, not by name
    run.last_checkpoint.write_text("c")
    os.utime(run.last_checkpoint, (now - 200, now - 200))
    assert run.latest_checkpoint() == run.last_checkpoint


def test_the_log_filter_scrubs_messages_arguments_and_tracebacks(monkeypatch):
    import logging
    import sys

    from midtrain.tracking.secrets import SecretFilter, contains_secret, install_log_filter

    secret = "hf_abcdefghijklmnopqrstuvwx"
    monkeypatch.setenv("HF_TOKEN", secret)
    assert contains_secret(f"key {secret}") and not contains_secret("nothing here")
    f = SecretFilter()

    def record(msg, args=None, exc_info=None):
        return logging.LogRecord("t", logging.INFO, __file__, 1, msg, args, exc_info)

    leaky = record("pushed with %s", (secret,))
    assert f.filter(leaky) is True
    assert leaky.getMessage() == f"pushed with {REDACTED}" and leaky.args is None
    clean = record("step %d", (3,))
    assert f.filter(clean) is True and clean.msg == "step %d" and clean.args == (3,) and clean.exc_text is None
    broken = record("%d", ("x",))  # getMessage() raises: left to the handler
    assert f.filter(broken) is True and broken.args == ("x",)
    try:
        raise ValueError(f"bad key {secret}")
    except ValueError:
        failed = record("failed", None, sys.exc_info())
    assert f.filter(failed) is True
    assert secret not in failed.exc_text and REDACTED in failed.exc_text
    assert failed.exc_text.startswith("Traceback") and not failed.exc_text.endswith("\n")
    formatted = record("failed")
    formatted.exc_text = f"Traceback: {secret}"
    assert f.filter(formatted) is True and formatted.exc_text == f"Traceback: {REDACTED}"
    logger = logging.getLogger("midtrain.test.secret_filter")
    handler = logging.StreamHandler()
    logger.addHandler(handler)
    try:
        install_log_filter(logger)
        install_log_filter(logger)  # once per handler
        assert sum(isinstance(x, SecretFilter) for x in handler.filters) == 1
    finally:
        logger.removeHandler(handler)


# Stage reuse on hand-made stage directories (the pipeline's own use: test_stage_reuse.py) --
def _finished_stage(path: Path, stage_hash: str | None, hf: bool = True, metrics: str = '{"loss": 1.5}') -> Path:
    from midtrain.tracking import RunDir

    path.mkdir(parents=True)
    (path / "metrics.json").write_text(metrics, encoding="utf-8")
    if hf:
        (path / "hf").mkdir()
        (path / "hf" / "config.json").write_text("{}", encoding="utf-8")
        (path / "hf" / "model.safetensors").write_bytes(b"weights")
    for name in (".lock", "checkpoints", ".hydra_logs"):
        (path / name).mkdir() if name != ".lock" else (path / name).write_text("", encoding="utf-8")
    RunDir(path).mark_done(stage_hash)
    return path


def test_reuse_candidates_are_other_runs_finished_stages_in_the_scope(tmp_path):
    from midtrain.tracking.reuse import candidates

    root = tmp_path / "runs"
    for sweep, run in (("s1", "b"), ("s1", "a"), ("s1", "me"), ("s2", "c")):
        (root / sweep / run / "midtrain").mkdir(parents=True)
        (root / sweep / run / "midtrain" / "DONE").write_text("{}", encoding="utf-8")
    (root / "s1" / "unfinished" / "midtrain").mkdir(parents=True)
    (root / "s1" / "a" / "instruct").mkdir()
    (root / "s1" / "a" / "instruct" / "DONE").write_text("{}", encoding="utf-8")
    me = root / "s1" / "me"
    assert candidates(me, "midtrain", "sweep") == [root / "s1" / "a" / "midtrain", root / "s1" / "b" / "midtrain"]
    assert candidates(me, "instruct", "sweep") == [root / "s1" / "a" / "instruct"]
    everywhere = [root / "s1" / "a" / "midtrain", root / "s1" / "b" / "midtrain", root / "s2" / "c" / "midtrain"]
    assert candidates(me, "midtrain", "runs_root", runs_root=root) == everywhere
    assert candidates(me, "midtrain", "runs_root") == everywhere  # the runs root is two levels up
    assert candidates(me, "midtrain", "off") == []
    with pytest.raises(ValueError, match=r"reuse_stages='all': expected one of sweep, runs_root, off"):
        candidates(me, "midtrain", "all")


def test_reuse_links_the_first_source_with_the_hash_and_writes_done_last(tmp_path, monkeypatch):
    import json
    import os

    from midtrain.tracking import RunDir
    from midtrain.tracking import reuse as reuse_mod

    wrong = _finished_stage(tmp_path / "wrong" / "midtrain", "other")
    no_hf = _finished_stage(tmp_path / "nohf" / "midtrain", "h1", hf=False)
    bad_metrics = _finished_stage(tmp_path / "bad" / "midtrain", "h1", metrics="[1]")
    good = _finished_stage(tmp_path / "good" / "midtrain", "h1")
    later = _finished_stage(tmp_path / "later" / "midtrain", "h1")
    dst = tmp_path / "me" / "midtrain"
    dst.mkdir(parents=True)
    (dst / ".lock").write_text("mine", encoding="utf-8")
    order = []
    real_replace = os.replace
    monkeypatch.setattr(reuse_mod.os, "replace", lambda a, b: (order.append(Path(b).name), real_replace(a, b)))

    assert reuse_mod.reuse_stage(dst, "h1", [wrong, no_hf, bad_metrics, good, later]) == good
    assert (dst / "hf" / "model.safetensors").stat().st_ino == (good / "hf" / "model.safetensors").stat().st_ino
    assert (dst / "metrics.json").stat().st_ino == (good / "metrics.json").stat().st_ino
    assert (dst / ".lock").read_text(encoding="utf-8") == "mine"  # not linked over this run's lock
    assert not (dst / "checkpoints").exists() and not (dst / ".hydra_logs").exists()
    assert not (tmp_path / "me" / ".midtrain.reusing").exists()
    record = json.loads((dst / "reused_from.json").read_text(encoding="utf-8"))
    assert record["source"] == str(good.resolve()) and record["stage_hash"] == "h1" and record["time"]
    assert (dst / "DONE").read_text(encoding="utf-8") == (good / "DONE").read_text(encoding="utf-8")
    assert RunDir(dst).done_problems(expected_hash="h1") == []
    assert order[-1] == "DONE" and order.index("reused_from.json") < order.index("DONE")
    # a stage without the model export can be reused where none is needed
    dst2 = tmp_path / "me2" / "midtrain"
    assert reuse_mod.reuse_stage(dst2, "h1", [no_hf], needs_hf=False) == no_hf
    assert not (dst2 / "hf").exists() and (dst2 / "DONE").is_file()


def test_reuse_leaves_a_stage_with_its_own_outputs_or_checkpoints_alone(tmp_path):
    from midtrain.tracking.reuse import reuse_stage

    good = _finished_stage(tmp_path / "good" / "midtrain", "h1")
    for own in ("metrics.json", "checkpoints", "hf", "DONE"):
        dst = tmp_path / own / "midtrain"
        dst.mkdir(parents=True)
        (dst / own).mkdir() if own in ("checkpoints", "hf") else (dst / own).write_text("{}", encoding="utf-8")
        assert reuse_stage(dst, "h1", [good]) is None
        assert sorted(p.name for p in dst.iterdir()) == [own]
    assert reuse_stage(tmp_path / "none" / "midtrain", "h1", []) is None
    assert reuse_stage(tmp_path / "none" / "midtrain", "h2", [good]) is None
    assert not (tmp_path / "none").exists()


def test_reuse_copies_where_hard_links_fail(tmp_path, monkeypatch):
    from midtrain.tracking import reuse as reuse_mod

    good = _finished_stage(tmp_path / "good" / "midtrain", "h1")

    def no_links(src, dst):
        raise OSError("cross-device link")

    monkeypatch.setattr(reuse_mod.os, "link", no_links)
    dst = tmp_path / "me" / "midtrain"
    assert reuse_mod.reuse_stage(dst, "h1", [good]) == good
    copied = dst / "hf" / "model.safetensors"
    assert copied.read_bytes() == b"weights"
    assert copied.stat().st_ino != (good / "hf" / "model.safetensors").stat().st_ino


# Identity helpers on hand-made configs (the composed pipeline's use: test_seed_cells.py) ----
def test_seed_fixed_sets_the_seed_on_a_copy_and_leaves_other_inputs_alone():
    from midtrain.tracking.identity import _seed_fixed

    cfg = OmegaConf.create({"seed": 7, "corpus": {"seed": "${seed}", "n": 2}})
    OmegaConf.set_readonly(cfg, True)
    fixed = _seed_fixed(cfg)
    assert fixed is not cfg and fixed.seed == 0 and fixed.corpus.seed == 0 and fixed.corpus.n == 2
    assert cfg.seed == 7 and cfg.corpus.seed == 7  # the original is untouched
    plain = {"seed": 7}
    assert _seed_fixed(plain) is plain  # a mapping is returned as given
    no_seed = OmegaConf.create({"corpus": {"n": 2}})
    assert _seed_fixed(no_seed) is no_seed


def test_cell_hash_ignores_the_seed_and_what_follows_it_but_not_own_values():
    from midtrain.tracking.identity import cell_hash, config_hash

    def cfg(seed, corpus_seed="${seed}", lr=0.1):
        return OmegaConf.create({"seed": seed, "corpus": {"seed": corpus_seed}, "optim": {"lr": lr}})

    assert cell_hash(cfg(1)) == cell_hash(cfg(2)) and config_hash(cfg(1)) != config_hash(cfg(2))
    assert cell_hash(cfg(1, corpus_seed=5)) != cell_hash(cfg(1))
    assert cell_hash(cfg(1, corpus_seed=5)) == cell_hash(cfg(2, corpus_seed=5))
    assert cell_hash(cfg(1, lr=0.2)) != cell_hash(cfg(1))
    assert len(cell_hash(cfg(1))) == 8


def test_settings_diff_lists_changed_added_and_removed_keys_sorted_and_redacted():
    from midtrain.tracking.identity import settings_diff

    defaults = OmegaConf.create({"seed": 0, "corpus": {"seed": "${seed}", "n": 2, "gone": 1},
                                 "optim": {"lr": 0.1}, "paths": {"root": "a"}})
    cfg = OmegaConf.create({"seed": 3, "corpus": {"seed": "${seed}", "n": 4, "new": "x"},
                            "optim": {"lr": 0.1, "api_key": "sekrit"}, "paths": {"root": "b"}})
    assert settings_diff(cfg, None) == {}
    diff = settings_diff(cfg, defaults)
    assert diff == {"corpus.gone": None, "corpus.n": 4, "corpus.new": "x", "optim.api_key": REDACTED, "seed": 3}
    assert list(diff) == sorted(diff)
    same_seed = OmegaConf.create({"seed": 0, "corpus": {"seed": "${seed}", "n": 2, "gone": 1},
                                  "optim": {"lr": 0.1}, "paths": {"root": "z"}})
    assert settings_diff(same_seed, defaults) == {}  # paths are not identity, the seed is the same


def test_a_stage_started_from_another_depends_on_its_hash_else_its_weights(tmp_path):
    from midtrain.tracking.identity import canonical, file_fingerprint

    def upstream(p):
        return canonical({"init_from": str(p)}, exclude=())["init_from"]

    stage = tmp_path / "midtrain"
    assert upstream(stage) == {"absent": "midtrain"}
    (stage / "hf").mkdir(parents=True)
    (stage / "hf" / "model.safetensors").write_bytes(b"w")
    by_weights = {"hf_sha256": file_fingerprint(stage / "hf")}
    assert upstream(stage) == by_weights
    for done in ("not json", "[1, 2]", '{"hash": null}', '{"hash": ""}'):
        (stage / "DONE").write_text(done, encoding="utf-8")
        assert upstream(stage) == by_weights, done
    (stage / "DONE").write_text('{"hash": "abcd1234"}', encoding="utf-8")
    assert upstream(stage) == {"stage_hash": "abcd1234"}
    assert canonical({"init_from": ""}, exclude=()) == {"init_from": ""}


def test_code_id_names_the_commit_and_a_dirty_trees_diff():
    from midtrain.tracking.provenance import code_id

    commit = "0123456789abcdef0123"
    assert code_id({"commit": commit, "dirty": False}) == "0123456789ab"
    assert code_id({"commit": commit, "dirty": True, "diff_sha256": "feedbeef99"}) == "0123456789ab+dirty.feedbeef"
    assert code_id({"commit": commit, "dirty": True}) == "0123456789ab+dirty."
    assert code_id({"commit": None}) is None and code_id({}) is None and code_id(None) is None
    assert code_id("0123") is None


def test_a_portable_path_resolves_against_its_base(tmp_path):
    from midtrain.tracking.provenance import resolve_portable

    assert resolve_portable(None, tmp_path) is None and resolve_portable("", tmp_path) is None
    assert resolve_portable("../a/b", tmp_path / "run") == (tmp_path / "a" / "b").resolve()
    assert resolve_portable(str(tmp_path / "x"), "/elsewhere") == tmp_path / "x"
    assert resolve_portable("~/x", tmp_path) == Path("~/x").expanduser()


def test_the_provenance_printout_is_this_environments_record(capsys, monkeypatch):
    from midtrain.tracking import provenance

    monkeypatch.setattr(provenance, "environment", lambda: {"code": {"commit": "c"}, "versions": {"torch": "1"}})
    provenance.main()
    assert capsys.readouterr().out == json.dumps({"code": {"commit": "c"}, "versions": {"torch": "1"}}, indent=2) + "\n"


def test_the_lock_holder_is_named_from_its_record_or_said_to_be_unknown(tmp_path):
    rd = RunDir(tmp_path)
    unknown = "another process (its host and pid are not yet written)"
    assert rd._holder() == unknown  # no lock file
    for text in ("", "not json", "[1]", '{"pid": 1}'):
        rd.lock_path.write_text(text, encoding="utf-8")
        assert rd._holder() == unknown, text
    rd.lock_path.write_text('{"pid": 42, "host": "node7", "since": "2026-01-01T00:00:00+0000"}', encoding="utf-8")
    assert rd._holder() == "pid 42 on host node7 (since 2026-01-01T00:00:00+0000)"


def test_clearing_a_stage_keeps_the_lock_and_hydra_logs_only(tmp_path):
    rd = RunDir(tmp_path / "stage")
    rd.clear_outputs()  # no directory yet: nothing to do
    assert not rd.path.exists()
    for d in ("checkpoints", "hf", ".hydra_logs"):
        (rd.path / d).mkdir(parents=True)
        (rd.path / d / "f").write_text("x", encoding="utf-8")
    for f in ("metrics.json", "DONE", ".lock", "train.log"):
        (rd.path / f).write_text("x", encoding="utf-8")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("x", encoding="utf-8")
    (rd.path / "linked").symlink_to(target, target_is_directory=True)
    rd.clear_outputs()
    assert sorted(p.name for p in rd.path.iterdir()) == [".hydra_logs", ".lock"]
    assert (rd.path / ".hydra_logs" / "f").is_file() and (target / "keep").is_file()  # a link's target stays
    rd.clear_outputs(keep=())
    assert list(rd.path.iterdir()) == []


# Edges of the run-directory helpers -----------------------------------------------------------
def test_a_done_marker_that_is_not_an_object_has_no_hash(tmp_path):
    rd = RunDir(tmp_path)
    assert rd.done_hash() is None  # no DONE
    for text in ("[1, 2]", '"abcd1234"', "not json"):
        rd.done_path.write_text(text, encoding="utf-8")
        assert rd.done_hash() is None, text


def test_a_layout_entry_joins_all_its_parts_under_the_run_directory(tmp_path):
    from midtrain.tracking.rundir import _Entry

    class StageDir(RunDir):
        report = _Entry("eval", "anima", "report.json")

    assert StageDir(tmp_path).report == tmp_path / "eval" / "anima" / "report.json"
    assert StageDir.report.parts == ("eval", "anima", "report.json")


def test_unflatten_drops_wandb_keys_and_keys_under_a_leaf_and_keeps_the_rest():
    from midtrain.tracking.nested import unflatten

    flat = {"_step": 3, "a/b": 1, "a/c": 2, "x": 0, "x/y": 5, "_runtime": 1.5, "z": 9}
    assert unflatten(flat) == {"a": {"b": 1, "c": 2}, "x": 0, "z": 9}
    assert unflatten({"a.b": 1}, sep=".") == {"a": {"b": 1}}


# Stage reuse: a crashed earlier attempt, and the record's time --------------------------------
def test_reuse_after_a_crashed_attempt_replaces_its_leftover_and_records_the_time(tmp_path):
    import re

    from midtrain.tracking.reuse import reuse_stage

    good = _finished_stage(tmp_path / "good" / "midtrain", "h1")
    dst = tmp_path / "me" / "midtrain"
    leftover = tmp_path / "me" / ".midtrain.reusing"
    (leftover / "hf").mkdir(parents=True)
    (leftover / "stale.txt").write_text("from the crashed attempt", encoding="utf-8")
    assert reuse_stage(dst, "h1", [good]) == good
    assert not leftover.exists() and not (dst / "stale.txt").exists()
    assert (dst / "hf" / "model.safetensors").read_bytes() == b"weights"
    record = json.loads((dst / "reused_from.json").read_text(encoding="utf-8"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", record["time"]), record["time"]


# Identity: plain mappings, resolvers -----------------------------------------------------------
def test_cell_hash_of_a_plain_mapping_leaves_the_seed_out():
    from midtrain.tracking.identity import cell_hash, config_hash

    a, b = {"seed": 1, "optim": {"lr": 0.1}}, {"seed": 2, "optim": {"lr": 0.1}}
    assert cell_hash(a) == cell_hash(b) == cell_hash({"optim": {"lr": 0.1}})
    assert config_hash(a) != config_hash(b)
    assert cell_hash({"seed": 1, "optim": {"lr": 0.2}}) != cell_hash(a)


def test_the_resolvers_register_once_and_resolve_the_hash_and_repository_paths(monkeypatch):
    from omegaconf.basecontainer import BaseContainer

    from midtrain.paths import REPO_ROOT
    from midtrain.tracking.identity import config_hash, register_resolvers

    monkeypatch.setattr(BaseContainer, "_resolvers", dict(BaseContainer._resolvers))  # restored afterwards
    for name in ("midtrain.hash", "midtrain.repo"):
        OmegaConf.clear_resolver(name)
    register_resolvers()
    register_resolvers()  # a second call keeps the first registration
    cfg = OmegaConf.create({"lr": 0.1, "here": "${midtrain.repo:}", "conf": "${midtrain.repo:conf}",
                            "run_id": "r-${midtrain.hash:}"})
    assert cfg.here == str(REPO_ROOT) and cfg.conf == str(REPO_ROOT / "conf")
    assert cfg.run_id == f"r-{config_hash(cfg)}"


# Provenance: git and the package version -------------------------------------------------------
def test_git_answers_inside_a_checkout_and_none_elsewhere(tmp_path):
    import re
    import subprocess
    from importlib import metadata

    from midtrain.tracking.provenance import _git, code_state

    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "m.py").write_text("x = 1\n", encoding="utf-8")
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "src"], [*ident, "commit", "-q", "-m", "init"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    head = _git(repo, "rev-parse", "HEAD")
    assert isinstance(head, bytes) and re.fullmatch(rb"[0-9a-f]{40}\n", head)
    outside = tmp_path / "plain"
    outside.mkdir()
    assert _git(outside, "rev-parse", "HEAD") is None
    state = code_state(str(repo))
    assert state["commit"] == head.decode().strip() and state["dirty"] is False and state["diff_sha256"] is None
    bare = code_state(str(outside))
    assert bare["commit"] is None and bare["dirty"] is None
    assert bare["version"] == metadata.version("alignment-midtraining") and bare["version"]


def test_an_absolute_portable_path_is_kept_as_written_not_resolved(tmp_path):
    from midtrain.tracking.provenance import resolve_portable

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    assert resolve_portable(str(tmp_path / "link" / "x"), tmp_path / "run") == tmp_path / "link" / "x"
    assert resolve_portable("../link/x", tmp_path / "run") == tmp_path / "real" / "x"  # relative: resolved


# When a DONE marker counts ---------------------------------------------------------------------
def test_done_problems_name_each_missing_piece_and_a_lying_done_is_reported(tmp_path, caplog):
    import logging
    import socket

    rd = RunDir(tmp_path / "s")
    assert rd.done_problems() == ["DONE"]
    with caplog.at_level(logging.WARNING, logger="midtrain.tracking.rundir"):
        assert rd.is_complete() is False
    assert caplog.records == []  # not started is not a lie
    rd.mark_done("h1")
    record = json.loads(rd.done_path.read_text(encoding="utf-8"))
    assert rd.done_path.read_text(encoding="utf-8").endswith("}\n")
    assert record["hash"] == "h1" and record["host"] == socket.gethostname() and record["pid"] == os.getpid()
    import re

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", record["time"])
    assert rd.done_problems() == ["metrics.json", "hf/config.json"]
    assert rd.done_problems(needs_hf=False) == ["metrics.json"]
    rd.metrics_path.write_text("[1]", encoding="utf-8")
    assert rd.done_problems(needs_hf=False) == ["metrics.json (not a JSON object)"]
    rd.metrics_path.write_text("{bad", encoding="utf-8")
    (problem,) = rd.done_problems(needs_hf=False)
    assert problem.startswith(f"metrics.json ({rd.metrics_path}: not valid JSON")
    rd.metrics_path.write_text("{}", encoding="utf-8")
    assert rd.done_problems(needs_hf=False) == []
    rd.hf.mkdir()
    (rd.hf / "config.json").write_text("{}", encoding="utf-8")
    assert rd.done_problems() == ["hf/ weights"]
    (rd.hf / "pytorch_model.bin").write_bytes(b"w")
    assert rd.done_problems() == []
    (rd.hf / "pytorch_model.bin").unlink()
    (rd.hf / "model-00001.safetensors").write_bytes(b"w")
    assert rd.done_problems() == [] and rd.done_problems(expected_hash="h1") == []
    assert rd.done_problems(expected_hash="h2") == ["matching hash (DONE has h1, the config gives h2)"]
    with caplog.at_level(logging.WARNING, logger="midtrain.tracking.rundir"):
        assert rd.is_complete(expected_hash="h2", what="the midtrain stage") is False
        assert rd.is_complete(expected_hash="h1") is True
    assert [r.getMessage() for r in caplog.records] == [
        f"{rd.path} has DONE but no matching hash (DONE has h1, the config gives h2): redoing the midtrain stage"]
    rd.metrics_path.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="midtrain.tracking.rundir"):
        assert rd.is_complete(needs_hf=False) is False
    assert [r.getMessage() for r in caplog.records] == [f"{rd.path} has DONE but no metrics.json: redoing it"]
    rd.metrics_path.write_text("{}", encoding="utf-8")
    rd.mark_done()
    assert rd.done_hash() is None and rd.done_problems(expected_hash="h2") == []  # no hash recorded: not checked


# What the identity covers ---------------------------------------------------------------------
def test_digest_is_sorted_compact_json_and_the_short_hash_is_its_prefix():
    from pathlib import Path as P

    from midtrain.tracking.identity import config_hash, digest

    assert digest({"b": 1, "a": [1, 2]}) == "94a786c3" == digest({"a": [1, 2], "b": 1})
    assert digest({"b": 1, "a": [1, 2]}, 16) == "94a786c3662bc7be"
    assert digest({"p": P("/x")}) == digest({"p": "/x"}) == "601c1879"  # anything else by its text
    assert config_hash({"b": 1, "a": [1, 2]}, exclude=()) == "94a786c3"


def test_file_fingerprints_hash_bytes_or_a_directorys_names_and_bytes(tmp_path):
    import hashlib

    from midtrain.tracking.identity import file_fingerprint

    f = tmp_path / "a.txt"
    f.write_bytes(b"hello")
    assert file_fingerprint(f) == hashlib.sha256(b"hello").hexdigest() == file_fingerprint(str(f))
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "x").write_bytes(b"1")
    (d / "sub" / "y").write_bytes(b"2")
    expected = hashlib.sha256(b"sub/y\0" + b"2" + b"x\0" + b"1").hexdigest()
    assert file_fingerprint(d) == expected
    (d / ".git").mkdir()
    (d / ".git" / "HEAD").write_bytes(b"ref")
    st = d.stat()
    os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000))  # not a cached answer
    assert file_fingerprint(d) == expected  # a checkout's .git is not content
    e = tmp_path / "e"
    (e / "sub").mkdir(parents=True)
    (e / "x").write_bytes(b"1")
    (e / "sub" / "z").write_bytes(b"2")  # same bytes, another name
    assert file_fingerprint(e) != expected


def test_canonical_hashes_every_file_input_by_content_and_drops_excluded_keys(tmp_path):
    from midtrain.tracking.identity import EXCLUDE, canonical, file_fingerprint

    data = tmp_path / "c.jsonl"
    data.write_text('{"text": "a"}\n', encoding="utf-8")
    sha = {"sha256": file_fingerprint(data)}
    local = tmp_path / "hfdir"
    local.mkdir()
    (local / "state.json").write_text("{}", encoding="utf-8")
    tree = canonical({
        "corpus": {"path": str(data), "mix": {"path": str(tmp_path / "gone.jsonl")}},
        "instruct": {"path": "???", "hf_id": str(local)},
        "qa": {"path": str(data), "hf_id": "org/remote"},
        "preserve": {"path": "", "corpus": {"path": str(data)}},
        "other": {"path": str(data)},
        "model": {"name_or_path": str(local), "tokenizer": "builtin:tiny", "gguf_file": str(tmp_path / "no.gguf")},
        "trainer": {"max_steps": 3, "log_every_n_steps": 1},
        "paths": {"runs_root": "x"}, "seed": 1,
    })
    assert tree == {
        "corpus": {"path": sha, "mix": {"path": {"absent": "gone.jsonl"}}},
        "instruct": {"path": "???", "hf_id": {"sha256": file_fingerprint(local)}},
        "qa": {"path": sha, "hf_id": "org/remote"},
        "preserve": {"path": "", "corpus": {"path": sha}},
        "other": {"path": str(data)},  # not a group that reads a file
        "model": {"name_or_path": {"sha256": file_fingerprint(local)}, "tokenizer": "builtin:tiny",
                  "gguf_file": str(tmp_path / "no.gguf")},
        "trainer": {"max_steps": 3},
        "seed": 1,
    }
    cfg = OmegaConf.create({"trainer": {"max_steps": 3, "log_every_n_steps": 1}, "logger": {"x": 1}, "n": "${trainer.max_steps}"})
    assert canonical(cfg) == {"trainer": {"max_steps": 3}, "n": 3}
    assert canonical(cfg, exclude=("trainer.max_steps.deeper", "missing.key")) == {
        "trainer": {"max_steps": 3, "log_every_n_steps": 1}, "logger": {"x": 1}, "n": 3}
    assert "data.num_workers" in EXCLUDE


def test_a_template_corpus_enters_by_its_universe_file_and_the_generators_wording():
    from midtrain.generation.template import PROSE_PATH
    from midtrain.paths import CONF_DIR
    from midtrain.tracking.identity import canonical, file_fingerprint

    tree = canonical({"corpus": {"source": "template", "universe": "animal_welfare"}}, exclude=())
    assert tree["corpus"]["universe_file"] == {"sha256": file_fingerprint(CONF_DIR / "universe" / "animal_welfare.yaml")}
    assert tree["corpus"]["template_prose"] == {"sha256": file_fingerprint(PROSE_PATH)}
    assert canonical({"corpus": {"source": "template", "universe": "nowhere"}}, exclude=())["corpus"]["universe_file"] is None
    assert canonical({"corpus": {"source": "jsonl", "universe": "animal_welfare"}}, exclude=()) == {
        "corpus": {"source": "jsonl", "universe": "animal_welfare"}}


def test_a_stage_hash_covers_what_its_objective_reads_and_the_stage_it_starts_from(tmp_path):
    from midtrain.tracking.identity import stage_hash

    def cfg(objective, corpus=1, instruct=2, qa=3, init_from=""):
        return OmegaConf.create({"objective": objective, "corpus": {"n": corpus}, "instruct": {"n": instruct},
                                 "qa": {"n": qa}, "init_from": init_from, "stage": objective})

    lm = stage_hash(cfg("lm"))
    assert len(lm) == 8 and lm == stage_hash(cfg("lm", instruct=9, qa=9)) != stage_hash(cfg("lm", corpus=9))
    sft = stage_hash(cfg("sft"))
    assert sft == stage_hash(cfg("sft", qa=9)) != stage_hash(cfg("sft", instruct=9))
    assert stage_hash(cfg("other")) != stage_hash(cfg("other", qa=9))
    up = tmp_path / "midtrain"
    up.mkdir()
    (up / "DONE").write_text('{"hash": "abcd1234"}', encoding="utf-8")
    from_dir = stage_hash(cfg("sft", init_from=str(up)))
    assert from_dir == stage_hash(cfg("sft", init_from="/moved/elsewhere"), upstream="abcd1234") != sft
    assert stage_hash(cfg("sft", init_from=str(up)), upstream="other") != from_dir


# Provenance: SLURM, attempts, portable paths, inputs --------------------------------------------
def test_slurm_state_reads_the_jobs_variables_with_counts_as_numbers():
    from midtrain.tracking.provenance import slurm_state

    assert slurm_state({"SLURM_ARRAY_TASK_ID": "3"}) is None  # no job id: not under SLURM
    env = {"SLURM_JOB_ID": "77", "SLURM_ARRAY_JOB_ID": "70", "SLURM_ARRAY_TASK_ID": "3", "SLURM_RESTART_COUNT": "2",
           "SLURM_JOB_NAME": "sweep", "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_PROCID": "0", "OTHER": "x"}
    assert slurm_state(env) == {"job_id": "77", "array_job_id": "70", "array_task_id": "3", "restart_count": 2,
                                "job_name": "sweep", "nodelist": "node[1-2]", "procid": 0}
    assert slurm_state({"SLURM_JOB_ID": "5", "SLURM_PROCID": "x1"}) == {"job_id": "5", "procid": "x1",
                                                                        "restart_count": 0}


def test_attempts_accumulate_per_activity_and_the_stage_entry_counts_them(tmp_path, monkeypatch):
    from midtrain.tracking import provenance

    monkeypatch.setattr(provenance, "environment", lambda: {"code": {"commit": "c"}, "slurm": None})
    stage = tmp_path / "stage"
    assert provenance.read_attempts(stage) == [] and provenance.stage_provenance(stage) == {
        "attempts": [], "attempt_count": {}}
    first = provenance.record_attempt(stage, "train", note="x")
    provenance.record_attempt(stage, "eval")
    third = provenance.record_attempt(stage, "train", api_key="sekrit")
    assert first["activity"] == "train" and first["attempt"] == 1 and first["note"] == "x"
    assert first["code"] == {"commit": "c"} and first["started_at"].endswith("+00:00")
    assert third["attempt"] == 2 and third["api_key"] == REDACTED
    saved = json.loads((stage / "provenance.json").read_text(encoding="utf-8"))
    assert [(a["activity"], a["attempt"]) for a in saved["attempts"]] == [("train", 1), ("eval", 1), ("train", 2)]
    entry = provenance.stage_provenance(stage)
    assert entry["attempt_count"] == {"train": 2, "eval": 1} and list(entry["attempt_count"]) == ["train", "eval"]
    assert entry["attempts"] == saved["attempts"] and "inputs" not in entry
    w = provenance.wandb_provenance(stage)
    assert w["attempts"] == 3 and sorted(w["attempt"]) == ["1", "2", "3"] and "slurm" not in w["attempt"]["1"]
    (stage / "provenance.json").write_text('{"attempts": {}}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"provenance.json: expected a JSON object with a list 'attempts'"):
        provenance.read_attempts(stage)


def test_portable_paths_are_relative_inside_the_runs_root_and_absolute_outside(tmp_path):
    from midtrain.tracking.provenance import portable_config, portable_path, resolve_portable

    root = tmp_path / "runs"
    run = root / "sweep" / "r1" / "instruct"
    assert portable_path(None, run) is None and portable_path("", run) is None
    assert portable_path(root / "sweep" / "r1" / "midtrain", run, root) == "../midtrain"
    assert portable_path(tmp_path / "data" / "c.jsonl", run, root) == str(tmp_path / "data" / "c.jsonl")
    r1 = root / "sweep" / "r1"
    assert portable_path(root / "other" / "r2", r1) == "../../other/r2"  # default root: the grandparent
    assert portable_path(tmp_path / "x", r1) == str(tmp_path / "x")
    assert resolve_portable(portable_path(root / "sweep" / "r1" / "midtrain", run, root), run) == (
        root / "sweep" / "r1" / "midtrain")
    cfg = OmegaConf.create({"paths": {"runs_root": str(root)}, "run_dir": str(run),
                            "init_from": str(root / "sweep" / "r1" / "midtrain"), "lr": "${x}", "x": 2,
                            "data": str(tmp_path / "d")})
    saved = portable_config(cfg, run)
    assert OmegaConf.to_container(saved) == {"paths": {"runs_root": "../../.."}, "run_dir": ".",
                                             "init_from": "../midtrain", "lr": 2, "x": 2, "data": str(tmp_path / "d")}
    assert cfg.init_from == str(root / "sweep" / "r1" / "midtrain")  # the original is unchanged
    bare = portable_config(OmegaConf.create({"init_from": "", "run_dir": str(run)}), run)
    assert bare.init_from == "" and bare.run_dir == "."


def test_inputs_record_the_model_revisions_and_the_corpus_files_hashes(tmp_path):
    import hashlib

    from midtrain.tracking.provenance import inputs

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "docs.jsonl").write_bytes(b'{"text": "a"}\n')
    (corpus / "manifest.json").write_bytes(b"{}")
    hf = tmp_path / "ds"
    hf.mkdir()
    (hf / "state.json").write_bytes(b"s")
    (hf / "dataset_info.json").write_bytes(b"i")
    (hf / "dataset_dict.json").write_bytes(b"d")
    root = tmp_path / "runs"
    stage = root / "sw" / "r" / "instruct"
    cfg = OmegaConf.create({
        "model": {"name": "tiny", "source": "hf", "revision": "main"},
        "paths": {"runs_root": str(root)}, "init_from": str(root / "sw" / "r" / "midtrain"),
        "corpus": {"name": "c", "source": "jsonl", "path": str(corpus / "docs.jsonl"), "split": "train",
                   "mix": {"source": "template", "universe": "u", "pool_size": 4, "extra": 1, "hf_id": str(hf)}},
        "instruct": {"source": "hf", "hf_id": str(hf), "revision": "${model.revision}", "path": "unused.jsonl"},
        "qa": {"source": "jsonl", "path": str(tmp_path / "missing" / "qa.jsonl")},
    })
    sha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    out = inputs(cfg, stage)
    assert out["model"] == {"name": "tiny", "source": "hf", "name_or_path": None, "revision": "main",
                            "gguf_file": None, "tokenizer": None}
    assert out["init_from"] == "../midtrain"
    assert out["corpus"] == {"name": "c", "source": "jsonl", "path": str(corpus / "docs.jsonl"), "split": "train",
                             "file_sha256": sha(b'{"text": "a"}\n'), "manifest_sha256": sha(b"{}"),
                             "mix": {"source": "template", "hf_id": str(hf), "universe": "u", "pool_size": 4}}
    assert out["instruct"] == {"source": "hf", "path": "unused.jsonl", "hf_id": str(hf), "revision": "main",
                               "dataset_dict_sha256": sha(b"d"), "state_sha256": sha(b"s"),
                               "dataset_info_sha256": sha(b"i")}
    assert out["qa"] == {"source": "jsonl", "path": str(tmp_path / "missing" / "qa.jsonl"),
                         "file_sha256": None, "manifest_sha256": None}
    assert inputs(cfg)["init_from"] == str(root / "sw" / "r" / "midtrain")  # no run dir: as configured
    cfg.qa.note = "???"  # a missing value is left to the stage's own check
    assert inputs(cfg, stage)["qa"]["source"] == "jsonl"
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.objective = "lm"
    assert sorted(inputs(cfg, stage)) == ["corpus", "init_from", "model"]
    cfg.objective = "sft"
    assert sorted(inputs(cfg, stage)) == ["init_from", "instruct", "model"]


def test_select_reads_a_dotted_key_or_gives_the_default():
    from midtrain.tracking.nested import select

    tree = {"a": {"b": {"c": 3}}, "x": 1}
    assert select(tree, "a.b.c") == 3 and select(tree, "a.b") == {"c": 3} and select(tree, "x") == 1
    assert select(tree, "a.z", 5) == 5 and select(tree, "x.y") is None and select(3, "a", "d") == "d"


def test_json_keeps_the_writers_key_order_and_the_saved_config_has_no_interpolations(tmp_path):
    target = tmp_path / "m.json"
    atomic_write_json(target, {"zeta": 1, "alpha": {"y": 2, "b": 3}})
    assert list(json.loads(target.read_text())) == ["zeta", "alpha"]
    assert target.read_text().index('"y"') < target.read_text().index('"b"')
    run = RunDir(tmp_path / "r")
    run.save_config(OmegaConf.create({"a": 2, "b": "${a}"}))
    assert "${" not in run.config_path.read_text(encoding="utf-8")
    assert OmegaConf.to_container(OmegaConf.load(run.config_path)) == {"a": 2, "b": 2}


def test_the_environment_record_names_code_versions_hardware_and_slurm(monkeypatch):
    import platform

    from midtrain.tracking import provenance

    monkeypatch.setattr(provenance, "LIBRARIES", ("omegaconf", "no-such-distribution-xyz"))
    versions = provenance.library_versions()
    assert versions == {"python": platform.python_version(), "omegaconf": versions["omegaconf"],
                        "no-such-distribution-xyz": None}
    assert versions["omegaconf"]
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    env = provenance.environment()
    assert sorted(env) == ["code", "hardware", "slurm", "versions"] and env["slurm"] is None
    assert env["versions"] == versions and sorted(env["code"]) == ["commit", "diff_sha256", "dirty", "version"]


def test_a_provenance_file_that_is_not_an_object_names_the_file(tmp_path):
    from midtrain.tracking.provenance import read_attempts

    (tmp_path / "provenance.json").write_text("[1]", encoding="utf-8")
    with pytest.raises(ValueError, match=r"provenance.json: expected a JSON object"):
        read_attempts(tmp_path)


def test_jsonl_lines_are_numbered_from_one_and_bad_ones_reported_or_raised(tmp_path):
    from midtrain.tracking.rundir import iter_jsonl

    path = tmp_path / "log.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"a": 1}\n' + b"\n" + '{"s": "x\u2028y"}\n'.encode() + b"\xff\n"
                     + b"not json\n" + b"[2]\n")
    bad = []
    rows = list(iter_jsonl(path, on_bad=lambda n, why: bad.append((n, why))))
    assert rows == [(1, {"a": 1}), (3, {"s": "x\u2028y"}), (6, [2])]
    assert bad == [(4, "not UTF-8 (invalid start byte at byte 0)"), (5, "not valid JSON (Expecting value)")]
    with pytest.raises(ValueError, match=rf"{path}:4: not UTF-8 \(invalid start byte at byte 0\)"):
        list(iter_jsonl(path))


def test_model_files_enter_by_content_and_builtin_or_package_names_by_name(tmp_path, monkeypatch):
    from midtrain.tracking.identity import canonical, file_fingerprint

    monkeypatch.chdir(tmp_path)
    for name in ("builtin:tiny", "package:tok"):  # a same-named file in the working directory changes nothing
        (tmp_path / name).write_bytes(b"decoy")
    gguf, tok = tmp_path / "m.gguf", tmp_path / "tok"
    gguf.write_bytes(b"g")
    tok.mkdir()
    (tok / "tokenizer.json").write_bytes(b"{}")
    model = canonical({"model": {"name_or_path": "builtin:tiny", "gguf_file": str(gguf), "tokenizer": str(tok)}},
                      exclude=())["model"]
    assert model == {"name_or_path": "builtin:tiny", "gguf_file": {"sha256": file_fingerprint(gguf)},
                     "tokenizer": {"sha256": file_fingerprint(tok)}}
    assert canonical({"model": {"tokenizer": "package:tok"}}, exclude=())["model"] == {"tokenizer": "package:tok"}
    data = tmp_path / "i.jsonl"
    data.write_bytes(b"{}\n")
    # groups missing before it (no corpus) do not stop the others being hashed
    assert canonical({"instruct": {"path": str(data)}}, exclude=()) == {"instruct": {"path": {"sha256": file_fingerprint(data)}}}


def test_the_cpu_model_comes_from_cpuinfo_else_the_platform(tmp_path, monkeypatch):
    from midtrain.tracking import provenance

    info = tmp_path / "cpuinfo"
    info.write_bytes(b"processor\t: 0\nvendor\t: \xff\nModel Name\t: Xeon(R): v2 \nmodel name\t: later\n")
    real_path = provenance.Path
    monkeypatch.setattr(provenance, "Path", lambda p: real_path(info if str(p) == "/proc/cpuinfo" else tmp_path / "none"))
    monkeypatch.setattr(provenance.platform, "processor", lambda: "x86_64")
    assert provenance._cpu_model() == "Xeon(R): v2"
    info.write_text("processor\t: 0\n", encoding="utf-8")
    assert provenance._cpu_model() == "x86_64"
    info.unlink()
    assert provenance._cpu_model() == "x86_64"
    monkeypatch.setattr(provenance.platform, "processor", lambda: "")
    assert provenance._cpu_model() is None


def test_the_hardware_record_names_host_cpu_and_accelerators():
    import socket

    import torch

    from midtrain.tracking.provenance import _cpu_model, hardware

    hw = hardware()
    assert hw["host"] == socket.gethostname() and hw["cpu_count"] == os.cpu_count() and hw["platform"]
    assert hw["cpu_model"] == _cpu_model() and hw["cpu_threads"] == torch.get_num_threads()
    assert hw["cuda"] == torch.version.cuda
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert hw["device_count"] == n and (hw["device_name"] is None) == (n == 0)
    assert hw["cudnn"] == (torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    assert sorted(hw) == ["cpu_count", "cpu_model", "cpu_threads", "cuda", "cudnn", "device_count", "device_name",
                          "host", "platform"]


def test_the_hardware_record_reads_cuda_cudnn_and_the_first_device(monkeypatch):
    import torch

    from midtrain.tracking.provenance import hardware

    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"gpu{i}")
    hw = hardware()
    assert (hw["cuda"], hw["cudnn"], hw["device_count"], hw["device_name"]) == ("12.4", 90100, 2, "gpu0")
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    hw = hardware()
    assert (hw["cudnn"], hw["device_count"], hw["device_name"]) == (None, 0, None)


def test_identity_details_nested_interpolations_default_exclusions_and_the_cache_key(tmp_path):
    from midtrain.tracking.identity import canonical, config_hash, file_fingerprint

    cfg = OmegaConf.create({"base_lr": 0.1, "optim": {"lr": "${base_lr}"}})
    assert canonical(cfg) == {"base_lr": 0.1, "optim": {"lr": 0.1}}
    with_paths = {"b": 1, "a": [1, 2], "paths": {"x": 1}}
    assert config_hash(with_paths) == "94a786c3" != config_hash(with_paths, exclude=())
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    os.utime(a, ns=(1_000_000_000, 1_000_000_000))
    os.utime(b, ns=(1_000_000_000, 1_000_000_000))
    assert file_fingerprint(a) != file_fingerprint(b)  # same size and time, other file


def test_inputs_name_a_broken_input_and_init_from_relative_to_the_runs_root(tmp_path):
    from midtrain.tracking.provenance import inputs, portable_config

    root = tmp_path / "runs"
    stage = root / "sw" / "r" / "instruct"
    cfg = OmegaConf.create({"paths": {"runs_root": str(root)}, "init_from": str(root / "other" / "r" / "midtrain"),
                            "corpus": {"source": "jsonl", "path": "${nope}"}, "objective": "lm"})
    out = inputs(cfg, stage)
    assert out["init_from"] == "../../../other/r/midtrain"
    assert sorted(out["corpus"]) == ["error"] and out["corpus"]["error"].startswith("InterpolationKeyError: ")
    saved = portable_config(OmegaConf.create({"run_dir": str(stage), "later": "???"}), stage)
    assert OmegaConf.is_missing(saved, "later") and saved.run_dir == "."


def test_the_stage_entry_carries_the_inputs_with_paths_relative_to_the_stage(tmp_path):
    from midtrain.tracking.provenance import stage_provenance

    root = tmp_path / "runs"
    stage = root / "sw" / "r" / "instruct"
    cfg = OmegaConf.create({"paths": {"runs_root": str(root)}, "init_from": str(root / "sw" / "r" / "midtrain"),
                            "model": {"name": "tiny"}, "objective": "sft"})
    entry = stage_provenance(stage, cfg)
    assert entry["inputs"]["init_from"] == "../midtrain" and entry["inputs"]["model"]["name"] == "tiny"
    assert entry["attempts"] == [] and entry["attempt_count"] == {}


def test_run_provenance_collects_every_attempts_code_and_versions_sorted_with_unrecorded_last():
    from midtrain.tracking.provenance import differing_provenance, format_values, iter_attempts, run_provenance

    def attempt(torch, commit="c1"):
        return {"code": {"commit": commit, "dirty": False}, "versions": {"python": "3.11", "torch": torch}}

    metrics = {"provenance": {"attempts": [attempt("2.1"), "junk"],
                              "stages": {"midtrain": {"attempts": [attempt("1.9"), attempt(None, "c2")],
                                                      "stages": {"deep": {"attempts": [attempt("2.0")]}}},
                                         "instruct": {"attempts": [{"code": None, "versions": "bad"}]},
                                         "broken": "not a mapping"}}}
    assert len(list(iter_attempts(metrics))) == 5
    prov = run_provenance(metrics)
    assert prov["torch"] == ["1.9", "2.0", "2.1", None] and prov["python"] == ["3.11", None]
    assert prov["code"] == ["c1", "c2", None] and prov["numpy"] == [None]
    assert run_provenance({"provenance": {"attempts": []}}) == {} and run_provenance({}) == {}
    rows = [{"provenance": {"torch": ["2.1", "1.8"], "code": ["c3"]}},
            {"provenance": {"torch": ["1.9", "2.0", "2.2"], "code": ["c3"]}}, {"provenance": {}}]
    assert differing_provenance(rows) == {"code": ["c3", None],
                                          "torch": ["1.8", "1.9", "2.0", "2.1", "2.2", None]}  # the rest agree
    assert differing_provenance([{"provenance": {}}, {}]) == {}
    assert format_values(["2.1", None, 3]) == "2.1 | unrecorded | 3" and format_values(None) == ""


def test_a_stage_without_its_model_export_is_complete_only_where_none_is_needed(tmp_path):
    rd = RunDir(tmp_path / "s")
    rd.path.mkdir()
    rd.metrics_path.write_text("{}", encoding="utf-8")
    rd.mark_done("h")
    assert rd.is_complete() is False and rd.is_complete(needs_hf=False) is True
