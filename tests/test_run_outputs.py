"""What a run directory holds: DONE last, atomic JSON, merged metrics, checkpoints, and no
secret under a token-like key."""

from __future__ import annotations

import json
import os
import time

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
