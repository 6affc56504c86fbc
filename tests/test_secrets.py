"""Redaction by key name, by value and by token shape, in strings and lists; Hydra's output and
W&B's settings. The end-to-end canary run of every app is in test_no_secrets.py (slow)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import midtrain.tracking.secrets as secrets
from midtrain.tracking.secrets import REDACTED, redact_config, scrub_secrets

CANARY = "CANARYq7Zxsecret01"


def test_the_generators_key_table_is_the_scrubbers_table():
    from midtrain import providers

    assert {p.keys[0] for p in providers.PROVIDERS.values() if p.needs_key} <= set(secrets.SECRET_ENV_VARS)
    assert set(providers.key_variables()) <= set(secrets.SECRET_ENV_VARS)
    for var in ("XAI_API_KEY", "DEEPSEEK_API_KEY", "FIREWORKS_API_KEY", "OPENROUTER_API_KEY", "PERPLEXITY_API_KEY"):
        assert var in secrets.SECRET_ENV_VARS


def test_one_provider_table_drives_the_key_check_and_the_scrubber(monkeypatch, tmp_path):
    """A provider added to the table is checked for its key before generation and has every
    variable it names scrubbed, though no name looks secret to the name heuristics."""
    from hydra import compose, initialize_config_dir

    from midtrain import providers
    from midtrain.generate import validate
    from midtrain.paths import CONF_DIR

    monkeypatch.setitem(providers.PROVIDERS, "acme", providers.Provider(("ACME_LOGIN_CODE", "ACME_OTHER_CODE")))
    for var in ("ACME_LOGIN_CODE", "ACME_OTHER_CODE"):
        monkeypatch.delenv(var, raising=False)
        assert not secrets.is_secret_key(var)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("generate", overrides=["generator=llm", "generator.model=acme/m1", "num_docs=2",
                                             f"out_dir={tmp_path}"])
    with pytest.raises(ValueError, match="needs the API key in the environment variable ACME_LOGIN_CODE"):
        validate(cfg)
    monkeypatch.setenv("ACME_LOGIN_CODE", CANARY)
    monkeypatch.setenv("ACME_OTHER_CODE", CANARY[::-1])
    validate(cfg)
    assert {"ACME_LOGIN_CODE", "ACME_OTHER_CODE"} <= set(secrets.secret_env_vars())
    out = redact_config({"note": f"a {CANARY} b", "args": [f"x={CANARY[::-1]}"]})
    assert out == {"note": f"a {REDACTED} b", "args": [f"x={REDACTED}"]}


@pytest.mark.parametrize("var", ["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GOOGLE_API_KEY", "MISTRAL_API_KEY", "GROQ_API_KEY",
                                 "TOGETHER_API_KEY", "XAI_API_KEY", "DEEPSEEK_API_KEY", "FIREWORKS_API_KEY",
                                 "OPENROUTER_API_KEY", "PERPLEXITY_API_KEY", "HF_TOKEN", "WANDB_API_KEY"])
def test_every_provider_key_value_is_scrubbed_inside_lists(monkeypatch, var):
    monkeypatch.setenv(var, CANARY)
    out = redact_config({"stages": {"evaluate": {"overrides": [f"model.model_args.x={CANARY}", "eval=probe"]}}})
    assert CANARY not in str(out)
    assert out["stages"]["evaluate"]["overrides"][1] == "eval=probe"


def test_a_secret_named_assignment_inside_an_override_list_is_redacted():
    cfg = {"overrides": [f"+model.model_args.api_key={CANARY}", f"grader_token: {CANARY}", "max_tokens=512"]}
    out = redact_config(cfg)["overrides"]
    assert out == [f"+model.model_args.api_key={REDACTED}", f"grader_token: {REDACTED}", "max_tokens=512"]


@pytest.mark.parametrize("token", [
    "sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345",
    "sk-proj-ABCDEFGHIJKLMNOPQRSTUV",
    "hf_abcdefghijklmnopqrstuvwxyz1234",
    "xai-abcdefghijklmnopqrstuvwxyz",
    "gsk_abcdefghijklmnopqrstuvwxyz",
    "0123456789abcdef0123456789abcdef01234567",  # a W&B key's shape
])
def test_token_shapes_are_redacted_under_harmless_names(token):
    out = redact_config({"note": f"key {token} here", "tags": [token, "plain"], "args": {"headers": f"Bearer {token}"}})
    assert token not in str(out)
    assert out["tags"][1] == "plain"
    assert out["note"] == f"key {REDACTED} here"


def test_a_git_revision_is_not_taken_for_a_key():
    sha = "0123456789abcdef0123456789abcdef01234567"
    out = redact_config({"model": {"revision": sha}, "overrides": [f"model.revision={sha}"], "x": f"commit {sha}"})
    assert out == {"model": {"revision": sha}, "overrides": [f"model.revision={sha}"], "x": f"commit {sha}"}


def test_harmless_values_pass_unchanged():
    cfg = {"tokenizer": "builtin:tiny", "max_tokens": 4096, "author": "A. Writer", "text": "the token economy: a study",
           "lr": 1e-3, "universe_digest": "ab" * 32}
    assert redact_config(cfg) == cfg


def test_the_log_filter_scrubs_messages_and_tracebacks(monkeypatch):
    monkeypatch.setenv("XAI_API_KEY", CANARY)
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "calling with %s", (CANARY,), None)
    try:
        raise RuntimeError(f"bad key sk-abcdefghijklmnopqrstuvwx and {CANARY}")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    secrets.SecretFilter().filter(record)
    assert CANARY not in record.getMessage()
    assert CANARY not in record.exc_text and "sk-abcdefghijklmnopqrstuvwx" not in record.exc_text
    assert scrub_secrets(f"x {CANARY}") == f"x {REDACTED}"


def test_wandb_is_told_not_to_record_the_command_line():
    from midtrain.tracking.wandb import wandb_settings

    s = wandb_settings()
    assert s.x_disable_meta and s.disable_code and s.disable_git and not s.save_code


def test_hydra_output_is_written_redacted(tmp_path):
    """midtrain-generate (template, offline) with a key on the command line: Hydra's .hydra/
    files exist, hold the overrides, and hold no secret."""
    out = tmp_path / "corpus"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = ["generator=template", "num_docs=4", f"out_dir={out}", "progress=false",
            f"+generator.model_args.api_key={CANARY}", "+generator.note=sk-abcdefghijklmnopqrstuvwx"]
    proc = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'midtrain-generate'; "
                           "from midtrain.generate import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hydra_dir = out / ".hydra_logs" / ".hydra"
    files = sorted(p.name for p in hydra_dir.iterdir())
    assert files == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    overrides = (hydra_dir / "overrides.yaml").read_text()
    assert "num_docs=4" in overrides and f"+generator.model_args.api_key={REDACTED}" in overrides
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert CANARY.encode() not in data and b"sk-abcdefghijklmnopqrstuvwx" not in data, path


def test_a_failing_job_logs_its_overrides_without_the_secret(tmp_path):
    """Hydra logs 'Error executing job with overrides: [...]' (to the console and its log file)
    when the task raises; the secret in those overrides is scrubbed on the way."""
    out = tmp_path / "corpus"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = ["generator=template", "num_docs=-1", f"out_dir={out}", f"+generator.model_args.api_key={CANARY}"]
    proc = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'midtrain-generate'; "
                           "from midtrain.generate import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "num_docs must be a positive integer" in proc.stderr
    assert "Error executing job with overrides" in proc.stderr and CANARY not in proc.stderr + proc.stdout
    logs = list(out.rglob("*.log"))
    assert logs and all(CANARY.encode() not in p.read_bytes() for p in out.rglob("*") if p.is_file())


def test_a_multirun_writes_multirun_yaml_and_job_output_redacted(tmp_path):
    out = tmp_path / "corpus"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = ["-m", "generator=template", "num_docs=2", f"out_dir={out}", "progress=false", "seed=0,1",
            f"+generator.model_args.api_key={CANARY}"]
    proc = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'midtrain-generate'; "
                           "from midtrain.generate import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=300)
    # The second job finds the first one's corpus (another seed) and is refused: a failed job's
    # report must be scrubbed too.
    assert (out / ".multirun" / "multirun.yaml").is_file()
    assert len(list((out / ".multirun").glob("*/.hydra/overrides.yaml"))) == 2
    assert CANARY not in proc.stdout + proc.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path


def _raised(message: str):
    try:
        raise RuntimeError(message)
    except RuntimeError:
        return sys.exc_info()


@pytest.mark.parametrize("tail", [" ", "X"])  # what the message ends with is kept
def test_the_log_filter_scrubs_the_traceback_the_handler_would_write(monkeypatch, tail):
    monkeypatch.setenv("XAI_API_KEY", CANARY)
    exc_info = _raised(f"bad key {CANARY}{tail}")
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, exc_info)
    secrets.SecretFilter().filter(record)
    # The formatter's own traceback text, line for line, with only the secret replaced.
    plain = logging.Formatter().formatException(exc_info)
    assert CANARY in plain and record.exc_text == plain.replace(CANARY, REDACTED)
    assert record.exc_text.count("\n") >= 3 and not record.exc_text.endswith("\n")
    assert logging.Formatter().format(record) == f"failed\n{record.exc_text}"


def test_the_log_filter_scrubs_an_exception_that_was_never_raised(monkeypatch):
    # `log.error(..., exc_info=exc)` with an exception built but not raised: no traceback object.
    monkeypatch.setenv("XAI_API_KEY", CANARY)
    exc = RuntimeError(f"bad key {CANARY}")
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, (RuntimeError, exc, None))
    secrets.SecretFilter().filter(record)
    assert record.exc_text == f"RuntimeError: bad key {REDACTED}"
    assert CANARY not in logging.Formatter().format(record)


# The Hydra callback, called directly (the tests above run it inside a real app) ------------
TOKEN = "sk-abcdefghijklmnopqrstuvwx"  # redacted by its shape alone


def _hydra_node(tmp_path: Path, mode: str = "RUN", task: tuple[str, ...] = ()) -> dict:
    from hydra.types import RunMode

    return {"runtime": {"output_dir": str(tmp_path / "job")}, "overrides": {"task": list(task)},
            "mode": RunMode[mode], "run": {"dir": str(tmp_path / "job")}, "sweep": {"dir": str(tmp_path / "sweep")}}


def test_missing_keys_are_found_in_dicts_and_lists_but_not_under_hydra():
    from omegaconf import OmegaConf

    from midtrain.tracking.hydra_output import _missing_keys

    cfg = OmegaConf.create({"corpus": {"name": "???", "path": "x"}, "grid": [1, "???"], "seed": 0,
                            "hydra": {"run": {"dir": "???"}}, "b": "???"})
    assert _missing_keys(cfg) == ["b", "corpus.name", "grid[1]"]
    assert _missing_keys(OmegaConf.create({"a": {"b": 1}, "hydra": {}})) == []


def test_an_output_dir_that_needs_a_missing_value_stops_the_app_naming_it():
    from omegaconf import OmegaConf

    from midtrain.tracking.hydra_output import _check_output_dir

    cfg = OmegaConf.create({"corpus": {"name": "???"}, "hydra": {"run": {"dir": "runs/${corpus.name}"}}})
    with pytest.raises(SystemExit) as e:
        _check_output_dir(cfg, "hydra.run.dir")
    assert str(e.value) == ("error: required value(s) not set: corpus.name (give them on the command line, "
                            "e.g. corpus.name=...)")
    _check_output_dir(OmegaConf.create({"corpus": {"name": "a"}, "hydra": {"run": {"dir": "runs/${corpus.name}"}}}),
                      "hydra.run.dir")  # resolvable: nothing happens


def test_an_output_dir_missing_without_a_named_key_still_stops_the_app():
    from omegaconf import OmegaConf

    from midtrain.tracking.hydra_output import _check_output_dir

    with pytest.raises(SystemExit) as e:
        _check_output_dir(OmegaConf.create({"hydra": {"run": {"dir": "???"}}}), "hydra.run.dir")
    assert str(e.value) == ("error: required value(s) not set: a required value (give them on the command line, "
                            "e.g. key=...)")


def test_redact_file_rewrites_only_a_file_that_holds_a_secret(tmp_path):
    from midtrain.tracking.hydra_output import redact_file

    dirty = tmp_path / "multirun.yaml"
    dirty.write_text(f"task:\n- seed=0\n- +logger.api_key={CANARY}\nnote: {TOKEN}\n", encoding="utf-8")
    redact_file(dirty)
    text = dirty.read_text(encoding="utf-8")
    assert CANARY not in text and TOKEN not in text and "seed=0" in text
    assert f"+logger.api_key={REDACTED}" in text and f"note: {REDACTED}" in text
    clean = tmp_path / "clean.yaml"
    clean.write_text("a: 1\nb:\n  c: x\n", encoding="utf-8")
    before = clean.stat().st_ino
    redact_file(clean)
    assert clean.read_text(encoding="utf-8") == "a: 1\nb:\n  c: x\n" and clean.stat().st_ino == before
    redact_file(tmp_path / "absent.yaml")  # skipped
    assert not (tmp_path / "absent.yaml").exists()


def test_redact_file_reads_and_writes_utf8_under_an_ascii_default_encoding(tmp_path, monkeypatch):
    """In process, with the default text encoding made ASCII (what LANG=C gives without locale
    coercion): the file Hydra wrote in UTF-8 is read and rewritten as UTF-8. The subprocess
    form under a real C locale is `test_redact_file_reads_utf8_whatever_the_locale`."""
    import io

    from midtrain.tracking.hydra_output import redact_file

    monkeypatch.setattr(io, "text_encoding", lambda encoding, stacklevel=2: encoding or "ascii")
    path = tmp_path / "config.yaml"
    path.write_bytes(f"corpus:\n  name: bien-être animal\nlogger:\n  api_key: {CANARY}\n".encode())
    redact_file(path)
    text = path.read_bytes().decode("utf-8")
    assert CANARY not in text and "bien-être animal" in text and REDACTED in text


def test_a_required_path_must_be_given_and_must_exist(tmp_path):
    from omegaconf import OmegaConf

    from midtrain.tracking.hydra_output import RedactedOutput

    cb = RedactedOutput(require_existing=["run_dir"])
    hydra = {"run": {"dir": str(tmp_path)}}
    for value in (None, "???"):
        with pytest.raises(SystemExit) as e:
            cb.on_run_start(OmegaConf.create({"run_dir": value, "hydra": hydra}))
        assert str(e.value) == "error: run_dir is required: run_dir=<path>"
    with pytest.raises(SystemExit) as e:
        cb.on_run_start(OmegaConf.create({"run_dir": str(tmp_path / "nope"), "hydra": hydra}))
    assert str(e.value) == f"error: run_dir={tmp_path / 'nope'} does not exist"
    cb.on_run_start(OmegaConf.create({"run_dir": str(tmp_path), "hydra": hydra}))
    with pytest.raises(SystemExit, match="corpus.name"):
        cb.on_run_start(OmegaConf.create({"corpus": {"name": "???"}, "run_dir": str(tmp_path),
                                          "hydra": {"run": {"dir": "${corpus.name}"}}}))
    RedactedOutput().on_run_start(OmegaConf.create({"run_dir": None, "hydra": hydra}))  # nothing required


def test_a_multirun_start_checks_the_sweep_dir():
    from omegaconf import OmegaConf

    from midtrain.tracking.hydra_output import RedactedOutput

    with pytest.raises(SystemExit, match="corpus.name"):
        RedactedOutput().on_multirun_start(OmegaConf.create({"corpus": {"name": "???"},
                                                             "hydra": {"sweep": {"dir": "${corpus.name}"}}}))
    RedactedOutput().on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": "s"}}}))


def test_the_job_start_writes_hydras_three_files_redacted(tmp_path):
    from omegaconf import OmegaConf

    from midtrain.tracking.hydra_output import RedactedOutput

    cfg = OmegaConf.create({"seed": 3, "logger": {"api_key": CANARY}, "hydra": _hydra_node(
        tmp_path, task=("seed=3", f"+logger.api_key={CANARY}"))})
    RedactedOutput(output_subdir="meta").on_job_start(cfg)
    out = tmp_path / "job" / "meta"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    config = OmegaConf.load(out / "config.yaml")
    assert config.seed == 3 and config.logger.api_key == REDACTED and "hydra" not in config
    assert list(OmegaConf.load(out / "overrides.yaml")) == ["seed=3", f"+logger.api_key={REDACTED}"]
    hydra_yaml = OmegaConf.load(out / "hydra.yaml")
    assert hydra_yaml.hydra.overrides.task == ["seed=3", f"+logger.api_key={REDACTED}"]
    assert hydra_yaml.hydra.runtime.output_dir == str(tmp_path / "job")
    assert not (tmp_path / "sweep").exists()  # a single run has no multirun.yaml to redact
    for p in out.iterdir():
        assert CANARY not in p.read_text(encoding="utf-8")


def test_a_multirun_job_start_and_the_sweep_end_redact_multirun_yaml(tmp_path):
    from omegaconf import OmegaConf

    from midtrain.tracking.hydra_output import RedactedOutput

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(f"task:\n- +logger.api_key={CANARY}\n", encoding="utf-8")
    cfg = OmegaConf.create({"seed": 0, "hydra": _hydra_node(tmp_path, mode="MULTIRUN")})
    RedactedOutput().on_job_start(cfg)
    assert CANARY not in (sweep / "multirun.yaml").read_text(encoding="utf-8")
    assert (tmp_path / "job" / ".hydra" / "config.yaml").is_file()
    (sweep / "multirun.yaml").write_text(f"task:\n- +logger.api_key={CANARY}\n", encoding="utf-8")
    RedactedOutput().on_multirun_end(cfg)
    assert (sweep / "multirun.yaml").read_text(encoding="utf-8") == f"task:\n- +logger.api_key={REDACTED}\n"


def test_a_failed_jobs_overrides_and_exception_are_scrubbed():
    from types import SimpleNamespace

    from midtrain.tracking.hydra_output import RedactedOutput

    error = RuntimeError(f"bad key {TOKEN}", 7)
    ret = SimpleNamespace(overrides=["seed=1", f"+logger.api_key={CANARY}"], _return_value=error)
    RedactedOutput().on_job_end(None, job_return=ret)
    assert ret.overrides == ["seed=1", f"+logger.api_key={REDACTED}"]
    assert error.args == (f"bad key {REDACTED}", 7)
    ok = SimpleNamespace(overrides=None, _return_value="fine")
    RedactedOutput().on_job_end(None, job_return=ok)
    assert ok.overrides == [] and ok._return_value == "fine"
    RedactedOutput().on_job_end(None)  # Hydra may pass no job_return


# The Hydra callback: what its files keep verbatim, and the edge cases of its checks ---------
def test_every_missing_value_the_output_dir_needs_is_named():
    from omegaconf import OmegaConf

    from midtrain.tracking.hydra_output import _check_output_dir

    cfg = OmegaConf.create({"corpus": {"name": "???"}, "model": {"size": "???"},
                            "hydra": {"run": {"dir": "runs/${corpus.name}/${model.size}"}}})
    with pytest.raises(SystemExit) as e:
        _check_output_dir(cfg, "hydra.run.dir")
    assert str(e.value) == ("error: required value(s) not set: corpus.name, model.size (give them on the "
                            "command line, e.g. corpus.name=...)")


def test_a_config_node_is_written_redacted_with_its_interpolations_kept():
    from omegaconf import OmegaConf

    from midtrain.tracking.hydra_output import _redacted_yaml

    node = OmegaConf.create({"seed": 1, "out": "runs/${seed}", "logger": {"api_key": CANARY}})
    assert _redacted_yaml(node) == f"seed: 1\nout: runs/${{seed}}\nlogger:\n  api_key: {REDACTED}\n"
    assert _redacted_yaml({"note": TOKEN}) == f"note: {REDACTED}\n"  # a plain container as it is


def test_redact_file_keeps_the_interpolations_hydra_wrote(tmp_path):
    from midtrain.tracking.hydra_output import redact_file

    path = tmp_path / "multirun.yaml"
    path.write_text(f"seed: 0\ndir: multirun/${{seed}}\ntask:\n- +logger.api_key={CANARY}\n", encoding="utf-8")
    redact_file(path)
    assert path.read_text(encoding="utf-8") == (f"seed: 0\ndir: multirun/${{seed}}\ntask:\n"
                                                f"- +logger.api_key={REDACTED}\n")


def test_redact_file_reads_utf8_whatever_the_locale(tmp_path):
    """On a node whose locale is plain ASCII (LANG=C, as on many batch nodes) a multirun.yaml
    holding non-ASCII text is still read, redacted and written back."""
    path = tmp_path / "multirun.yaml"
    path.write_text(f"note: café\ntask:\n- +logger.api_key={CANARY}\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LC_ALL": "C", "LANG": "C",
           "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    proc = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                           "from midtrain.tracking.hydra_output import redact_file; redact_file(Path(sys.argv[1]))",
                           str(path)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert path.read_text(encoding="utf-8") == f"note: café\ntask:\n- +logger.api_key={REDACTED}\n"


def test_the_job_start_files_keep_interpolations_unresolved(tmp_path):
    from omegaconf import OmegaConf

    from midtrain.tracking.hydra_output import RedactedOutput

    hydra = {**_hydra_node(tmp_path), "job": {"name": "job_${seed}"}}
    cfg = OmegaConf.create({"seed": 3, "out_dir": "runs/${seed}", "hydra": hydra})
    RedactedOutput().on_job_start(cfg)
    out = tmp_path / "job" / ".hydra"
    assert (out / "config.yaml").read_text(encoding="utf-8") == "seed: 3\nout_dir: runs/${seed}\n"
    assert OmegaConf.load(out / "hydra.yaml").hydra.job._get_node("name")._value() == "job_${seed}"


def test_a_job_return_without_a_return_value_has_its_overrides_scrubbed():
    from types import SimpleNamespace

    from midtrain.tracking.hydra_output import RedactedOutput

    ret = SimpleNamespace(overrides=[f"+logger.api_key={CANARY}"])
    RedactedOutput().on_job_end(None, job_return=ret)
    assert ret.overrides == [f"+logger.api_key={REDACTED}"]


# Redaction edge cases: which environment values, in which order, how far back a revision word reaches
HEX = "0123456789abcdef0123456789abcdef01234567"


def test_any_secret_named_variable_is_scrubbed_by_value_from_eight_characters(monkeypatch):
    monkeypatch.setenv("MIDTRAIN_DB_PASSWORD", "pw-8char")  # not in the table; named like a secret
    monkeypatch.setenv("MIDTRAIN_DB_TOKEN", "pw7char")  # too short to tell from ordinary words
    assert scrub_secrets("login pw-8char then pw7char") == f"login {REDACTED} then pw7char"


def test_a_secret_holding_another_is_scrubbed_whole(monkeypatch):
    """Longer values are replaced first, so a secret that contains another secret leaves no part behind."""
    pairs = [("zzsecret99", "a-zzsecret99-b"), ("aa1secret9", "zz-aa1secret9-q")]
    for i, (inner, outer) in enumerate(pairs):
        monkeypatch.setenv(f"MIDTRAIN_INNER{i}_TOKEN", inner)
        monkeypatch.setenv(f"MIDTRAIN_OUTER{i}_TOKEN", outer)
    for inner, outer in pairs:
        assert scrub_secrets(f"x {outer} y {inner}") == f"x {REDACTED} y {REDACTED}"


def test_a_hex_key_is_redacted_by_default_and_a_revision_word_protects_it_from_the_start():
    assert scrub_secrets(f"key {HEX}") == f"key {REDACTED}"
    assert scrub_secrets(f"sha {HEX}") == f"sha {HEX}"  # the word opens the text
    far = "commit" + "_" * 33 + ": "  # the word ends 41 characters before the value
    assert scrub_secrets(far + HEX) == far + REDACTED
    near = "commit" + "_" * 32 + ": "
    assert scrub_secrets(near + HEX) == near + HEX


def test_only_the_last_part_of_a_dotted_name_decides_whether_it_is_secret():
    text = "+model.password_policy.min_length=12 auth.mode=basic model.args.api_key=abc123"
    assert scrub_secrets(text) == f"+model.password_policy.min_length=12 auth.mode=basic model.args.api_key={REDACTED}"


def test_an_empty_or_null_secret_key_is_kept_as_it_is():
    assert redact_config({"api_key": "", "token": None, "password": "x"}) == {"api_key": "", "token": None,
                                                                             "password": REDACTED}


def test_git_revisions_listed_under_a_revision_key_are_kept():
    out = redact_config({"commits": [HEX, [HEX]], "keys": [HEX]})
    assert out == {"commits": [HEX, [HEX]], "keys": [REDACTED]}
