"""midtrain-generate writes only what it owns, fails loudly on a shortfall, and names the
extra to install when a provider's client is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import midtrain.generate as gen_module
from midtrain.generate import generate
from tests.test_generate import _cfg as template_cfg
from tests.test_generate_llm import Scripted, _cfg as llm_cfg

inspect_model = pytest.importorskip("inspect_ai.model")


def test_a_users_documents_jsonl_is_not_overwritten(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "documents.jsonl").write_text('{"text": "my own corpus"}\n')
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"did not write \(documents.jsonl, notes.txt\)"):
        generate(template_cfg("num_docs=4", f"out_dir={out}"))
    assert (out / "documents.jsonl").read_text() == '{"text": "my own corpus"}\n'
    assert sorted(p.name for p in out.iterdir()) == ["documents.jsonl", "notes.txt"]


def test_its_own_out_dir_is_reused_and_a_foreign_file_beside_it_is_named(tmp_path):
    out = tmp_path / "c"
    (out / ".hydra_logs").mkdir(parents=True)  # Hydra's log folder exists before generation runs
    first = generate(template_cfg("num_docs=4", f"out_dir={out}"))
    again = generate(template_cfg("num_docs=4", f"out_dir={out}"))
    assert again["num_written"] == first["num_written"] == 4
    (out / "extra.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match=r"did not write \(extra.jsonl\)"):
        generate(template_cfg("num_docs=4", f"out_dir={out}"))


def _always_fails(input, tools, tool_choice, config):
    raise RuntimeError("provider said no")


def test_total_failure_raises_after_writing_what_it_has(tmp_path):
    out = tmp_path / "c"
    model = inspect_model.get_model("mockllm/model", custom_outputs=_always_fails, memoize=False,
                                    config=inspect_model.GenerateConfig(max_connections=1, max_retries=0))
    with pytest.raises(gen_module.GenerationShortfall, match=r"wrote 0 of 4 requested \(upstream_missing=14\).*nothing written"):
        generate(llm_cfg(out), model=model)
    assert (out / "documents.jsonl").read_text() == ""
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_written"] == 0 and manifest["not_ready"] == {"upstream_missing": 14}


def test_a_partial_shortfall_fails_only_beyond_the_configured_share(tmp_path):
    manifest = generate(llm_cfg(tmp_path / "a"), model=Scripted(fail_idea="normal beta").model())
    assert manifest["shortfall"] == 2  # 2 of 4 missing: allowed by default (something was written)
    with pytest.raises(gen_module.GenerationShortfall, match=r"wrote 2 of 4 requested \(request_failed=2.*max_shortfall_share=0.25"):
        generate(llm_cfg(tmp_path / "b", "max_shortfall_share=0.25"), model=Scripted(fail_idea="normal beta").model())
    assert len((tmp_path / "b" / "documents.jsonl").read_text().splitlines()) == 2


def test_the_command_exits_non_zero_when_nothing_was_written(tmp_path):
    out = tmp_path / "c"
    # mockllm's default answer is no list (offline it cannot even count its tokens): every request fails.
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; sys.argv[0] = 'midtrain-generate'; from midtrain.generate import main; main()",
         "generator=llm", "generator.model=mockllm/model", "generator.cache=false", "num_docs=2",
         f"out_dir={out}", "progress=false"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "wrote 0 of 2 requested (upstream_missing=" in proc.stderr
    assert (out / "manifest.json").is_file() and (out / "documents.jsonl").read_text() == ""


@pytest.mark.parametrize("preset,model,extra", [
    ("claude", None, "anthropic"),
    ("llm", "openai/gpt-4.1", "openai"),
    ("vllm", "vllm/some/model", "openai"),
])
def test_a_missing_provider_client_names_the_extra(tmp_path, monkeypatch, preset, model, extra):
    module = {"anthropic": "anthropic", "openai": "openai"}[extra]
    monkeypatch.setitem(sys.modules, module, None)  # simulates the client not being installed
    for var in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.setenv(var, "test-key-not-used")
    overrides = [f"generator={preset}", "num_docs=2", f"out_dir={tmp_path / 'c'}"]
    if model:
        overrides.append(f"generator.model={model}")
    with pytest.raises(ImportError, match=rf"pip install 'alignment-midtraining\[{extra}\]'"):
        generate(template_cfg(*overrides))
    assert not (tmp_path / "c").exists()


def test_every_preset_names_a_provider_with_an_extra():
    """Each generator preset's provider maps to an extra that pyproject.toml defines."""
    import tomllib

    from midtrain.paths import CONF_DIR
    from midtrain.providers import PROVIDERS

    extras = tomllib.loads((CONF_DIR.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for p in PROVIDERS.values():
        assert p.extra in extras if p.client else p.extra is None
    for preset in ("claude", "vllm"):
        text = (CONF_DIR / "generator" / f"{preset}.yaml").read_text()
        provider = "anthropic" if preset == "claude" else "vllm"
        assert f"{provider}/" in text or preset == "vllm"
        assert PROVIDERS[provider].extra in extras
