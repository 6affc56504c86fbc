"""What a finished stage leaves on disk: DONE last, and no secret under a token-like key."""

from __future__ import annotations

import json

import pytest

from midtrain.tracking import RunDir, redact_config
from midtrain.tracking.secrets import REDACTED
from midtrain.train import train


def test_done_is_written_after_metrics_and_the_hf_export(smoke_cfg, monkeypatch):
    cfg = smoke_cfg("trainer.max_steps=1", "sweep_name=done_order")
    seen = []
    mark_done = RunDir.mark_done

    def spy(self: RunDir) -> None:
        seen.append({
            "metrics": self.metrics_path.exists(),
            "hf_config": (self.hf / "config.json").exists(),
            "hf_weights": (self.hf / "model.safetensors").exists(),
            "hf_tokenizer": (self.hf / "tokenizer.json").exists(),
        })
        mark_done(self)

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
