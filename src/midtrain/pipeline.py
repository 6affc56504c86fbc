"""`midtrain-pipeline`: one experimental condition, stage by stage, in one run directory.

    midtrain-pipeline experiment=treatment debug=smoke instruct.samples=16 paths.runs_root=/tmp/runs sweep_name=check

Layout of `<run_dir>/`: `midtrain/` (documents, or value Q&A for the instruction-tuning
baseline), `instruct/` (unrelated instruction tuning, initialised from `midtrain/hf`),
`base/` (the untrained model, exported only when something needs it), `evaluate/`, each
with its own `DONE`, then the combined `metrics.json` and `DONE`. Stages hand over through
these directories only, so a requeued job skips finished stages and resumes the current
one from its newest checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from midtrain.launch import global_rank, release_ranks, wait_for_rank_zero
from midtrain.paths import CONF_DIR
from midtrain.tracking import RunDir
from midtrain.tracking.provenance import record_attempt, stage_provenance
from midtrain.tracking.identity import EXCLUDE, canonical, cell_hash, config_hash, digest, settings_diff, stage_hash

log = logging.getLogger(__name__)

EVAL_TARGETS = ("base", "midtrain", "instruct", "final")
STAGE_ORDER = ("midtrain", "instruct", "base", "evaluate")
# What `redo=<stage>` runs again: the stage and everything that reads its result.
DOWNSTREAM = {"midtrain": ("midtrain", "instruct", "evaluate"), "instruct": ("instruct", "evaluate"),
              "base": ("base", "evaluate"), "evaluate": ("evaluate",)}
REDO_CHOICES = (None, "all", *STAGE_ORDER)


def stage_config(cfg: DictConfig, stage: str, objective: str, init_from: Path | None) -> DictConfig:
    """The `midtrain-train` config of one stage: the pipeline config plus the stage's deltas."""
    from midtrain.preserve import NONE

    c = cfg.copy()
    deltas = cfg.stages[stage]
    run_id = str(cfg.run_id)  # the pipeline's identity (resolved here: in a stage it would hash the stage)
    with open_dict(c):
        c.run_id = run_id  # every stage carries the pipeline's run id; its own identity is its stage hash
        c.stage = stage
        c.objective = objective
        c.run_dir = str(RunDir.from_cfg(cfg).path / stage)
        c.init_from = str(init_from) if init_from else None
        c.redo = None  # the pipeline decides what to redo, before any stage runs
        if stage == "midtrain" and objective == "sft":
            c.instruct = cfg.qa  # the value Q&A pairs are this stage's SFT data
        c.optim = OmegaConf.merge(cfg.optim, deltas.get("optim") or {})
        c.data = OmegaConf.merge(cfg.data, deltas.get("data") or {})
        c.trainer = OmegaConf.merge(cfg.trainer, deltas.get("trainer") or {})
        if stage != "instruct":  # the preservation strategy belongs to the instruction stage
            c.preserve = OmegaConf.create(NONE)
        for key in ("stages", "eval", "hydra"):  # the evaluate stage's suites are not a training setting
            c.pop(key, None)
    return c


def _check(cfg: DictConfig) -> None:
    from midtrain.launch import check_devices
    from midtrain.validate import check, problems

    check(cfg, "midtrain-pipeline config")  # ranges and types, before anything loads or is written
    st = cfg.stages
    for stage in ("midtrain", "instruct"):  # a stage's own optim/data/trainer deltas
        c = stage_config(cfg, stage, "lm", None)
        found = [f"stages.{stage}: {p}" for p in problems(c) if p not in problems(cfg)]
        if found:
            raise ValueError("invalid midtrain-pipeline config:\n  - " + "\n  - ".join(found))
    check_devices(cfg)
    if st.midtrain.objective not in ("lm", "sft"):
        raise ValueError(f"stages.midtrain.objective={st.midtrain.objective!r}: expected lm or sft")
    bad = [t for t in st.evaluate.after if t not in EVAL_TARGETS]
    if bad:
        raise ValueError(f"stages.evaluate.after: unknown {bad}; expected any of {list(EVAL_TARGETS)}")
    if st.evaluate.enabled:
        _check_eval(cfg)  # a bad eval setting fails here, not after the training stages
    if int(cfg.instruct.samples) < 0 or int(cfg.corpus.num_docs) < 0:
        raise ValueError("corpus.num_docs and instruct.samples must be >= 0")
    if int(cfg.instruct.samples) > 0:  # the instruction stage's strategy fails here, not after midtraining
        from midtrain.preserve import build_strategy

        midtrains = st.midtrain.enabled and int(cfg.corpus.num_docs) > 0
        icfg = stage_config(cfg, "instruct", "sft", RunDir.from_cfg(cfg).path / "midtrain" if midtrains else None)
        build_strategy(icfg.get("preserve")).check(icfg)
    if cfg.get("redo") not in REDO_CHOICES:
        raise ValueError(f"redo={cfg.get('redo')!r}: expected one of {[c for c in REDO_CHOICES if c]} (or null)")
    from midtrain.tracking.reuse import SCOPES

    if str(cfg.get("reuse_stages", "off")) not in SCOPES:
        raise ValueError(f"reuse_stages={cfg.get('reuse_stages')!r}: expected one of {', '.join(SCOPES)}")


@dataclass
class Plan:
    """The stages one condition runs, in order, with the hash of what each depends on."""

    train: dict[str, DictConfig] = field(default_factory=dict)   # midtrain, instruct: their train configs
    hashes: dict[str, str] = field(default_factory=dict)         # midtrain, instruct, base, evaluate
    need_base: bool = False
    targets: dict[str, str] = field(default_factory=dict)        # eval target -> stage directory name


def plan(cfg: DictConfig) -> Plan:
    """Which stages run and the identity of each (no file is written)."""
    st = cfg.stages
    run = RunDir.from_cfg(cfg)
    p = Plan()
    upstream: str | None = None
    previous: Path | None = None
    if st.midtrain.enabled and int(cfg.corpus.num_docs) > 0:
        p.train["midtrain"] = stage_config(cfg, "midtrain", str(st.midtrain.objective), None)
        upstream = p.hashes["midtrain"] = stage_hash(p.train["midtrain"])
        previous = run.path / "midtrain"
    if int(cfg.instruct.samples) > 0:
        p.train["instruct"] = stage_config(cfg, "instruct", "sft", previous)
        p.hashes["instruct"] = stage_hash(p.train["instruct"], upstream=upstream)
    if st.evaluate.enabled:
        after = list(st.evaluate.after)
        p.need_base = "base" in after or ("final" in after and not p.train)
        for name in after:
            if name == "final":
                p.targets["final"] = next(reversed(p.train), None) or "base"
            elif name in p.train or name == "base":
                p.targets[name] = name
    if p.need_base:
        p.hashes["base"] = digest(canonical(base_config(cfg), (*EXCLUDE, *_BASE_IGNORES)))
    if st.evaluate.enabled:
        ev = OmegaConf.to_container(st.evaluate, resolve=True)
        suites = OmegaConf.to_container(cfg.eval, resolve=True)
        p.hashes["evaluate"] = digest({"evaluate": ev, "eval": suites,
                                       "targets": {t: p.hashes[s] for t, s in p.targets.items()}})
    return p


# What the untrained model does not depend on (it is the model's init at the seed).
_BASE_IGNORES = ("corpus", "data", "optim", "trainer", "instruct", "qa", "objective", "init_from", "universe")


def base_config(cfg: DictConfig) -> DictConfig:
    c = stage_config(cfg, "midtrain", "lm", None)
    with open_dict(c):
        c.stage = "base"
        c.run_dir = str(RunDir.from_cfg(cfg).path / "base")
    return c


def _stage_ok(run: RunDir, name: str, p: Plan) -> bool:
    return RunDir(run.path / name).is_complete(needs_hf=name != "evaluate", expected_hash=p.hashes[name],
                                               what=f"stage {name}")


def is_complete(cfg: DictConfig, p: Plan | None = None) -> bool:
    """The run's DONE, and every stage's, with the files they vouch for and the current hashes."""
    run = RunDir.from_cfg(cfg)
    p = p or plan(cfg)
    if not run.is_complete(needs_hf=False, expected_hash=config_hash(cfg), what="the run"):
        return False
    return all(_stage_ok(run, name, p) for name in p.hashes)


def _invalidate(cfg: DictConfig, run: RunDir, p: Plan, redo: str | None) -> bool:
    """Clear what a redo names, every stage after an unfinished one, and any stage whose DONE
    cannot be trusted. Returns whether a redo asks for the evaluation to be recomputed even
    where a stage's `metrics.json` holds results with the same settings (a stage trained
    again writes a new `metrics.json`, so its old results are gone without forcing)."""
    cleared: list[str] = []
    forced = False

    def clear(name: str, why: str) -> None:
        d = RunDir(run.path / name)
        if d.path.exists():
            log.warning("%s: %s; clearing %s", run.path, why, d.path)
            d.clear_outputs()
            cleared.append(name)

    if redo is not None:
        names = [n for n in STAGE_ORDER if n in p.hashes] if redo == "all" else [
            n for n in DOWNSTREAM[redo] if n in p.hashes]

        def clear_redo() -> None:
            nonlocal forced
            for n in names:
                clear(n, f"redo={redo}")
            if "evaluate" in names:
                cleared.append("evaluate")  # recompute even where no evaluate/ directory was left
                forced = True

        from midtrain.train import apply_redo

        apply_redo(run, str(redo), clear_redo)
    broken = None
    for name in p.train:  # a stage after an unfinished one started from stale weights
        d = RunDir(run.path / name)
        if broken:
            if d.has_outputs() or d.checkpoints.exists():
                clear(name, f"stage {broken} is not finished, so {name} (which starts from it) is stale")
            continue
        if not _stage_ok(run, name, p):
            broken = name
            if d.has_outputs():  # DONE deleted or not trustworthy: the stage runs again from scratch
                found = [n for n in ("DONE", "metrics.json", "hf") if (d.path / n).exists()]
                clear(name, f"stage {name} has {', '.join(found)} but no valid DONE")
    if "evaluate" in p.hashes:
        ev = RunDir(run.path / "evaluate")
        upstream_ok = all(_stage_ok(run, s, p) for s in set(p.targets.values()) if s in p.train) and not broken
        if not upstream_ok or (ev.has_outputs() and not _stage_ok(run, "evaluate", p)):
            if ev.has_outputs():
                clear("evaluate", "the evaluated stages changed or evaluate/DONE cannot be trusted")
            if not upstream_ok:
                cleared.append("evaluate")
    if cleared or not run.is_complete(needs_hf=False, expected_hash=config_hash(cfg), what="the run"):
        run.done_path.unlink(missing_ok=True)
        run.metrics_path.unlink(missing_ok=True)
    return forced


def export_base(cfg: DictConfig, run: RunDir, h: str | None = None) -> RunDir:
    """`<run_dir>/base/hf`: the model before any training (what `final` is when nothing trains)."""
    from midtrain.lightning.trainer import initial_model, stage_tokenizer
    from midtrain.models.build import check_model_cfg, export_hf, remove_export_orphans
    from midtrain.train import identity

    base = RunDir(run.path / "base")
    c = base_config(cfg)
    h = h or digest(canonical(c, (*EXCLUDE, *_BASE_IGNORES)))
    if base.is_complete(needs_hf=True, expected_hash=h, what="stage base"):
        return base
    remove_export_orphans(base.path)
    base.clear_outputs()
    check_model_cfg(c.model)
    tokenizer = stage_tokenizer(c)
    model = initial_model(c, tokenizer)  # the init the first stage trains from, at the same seed
    base.path.mkdir(parents=True, exist_ok=True)
    record_attempt(base.path, "export")
    export_hf(model, tokenizer, base.hf)
    base.write_metrics({**identity(c), "stage_hash": h, "provenance": stage_provenance(base.path, c)})
    base.mark_done(h)
    return base


def compose_preset(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose a primary config inside a running Hydra app (its search path, e.g. `--config-dir
    sweeps`), or standalone from `conf/` (tests, notebooks)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=list(overrides or []))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides or []))


# The evaluate stage's own keys; the rest of `stages.evaluate` is conf/eval_settings/.
_EVALUATE_KEYS = ("enabled", "after")
_REMOVED = {"suites": "select suites with eval=<suite> (e.g. eval=paper, eval=[probe,anima])",
            "overrides": "set eval settings as keys of their own: stages.evaluate.<key>=... for midtrain-eval's "
                         "<key>=... (e.g. stages.evaluate.grader_models=[...]), eval.<suite>.<key>=... as in midtrain-eval"}


def eval_config(cfg: DictConfig, run_dir: Path | str, force: bool = False) -> DictConfig:
    """The `midtrain-eval` config of one evaluated stage: `stages.evaluate`'s settings and the
    `eval` suites of the pipeline's config, scoring `run_dir`."""
    from midtrain.evals.settings import resolved

    ev = cfg.stages.evaluate
    c = resolved(ev, [k for k in ev if k not in _EVALUATE_KEYS])
    with open_dict(c):
        c.eval = resolved(cfg, ["eval"]).eval
        c.run_dir = str(run_dir)
        c.force = bool(force)
    return c


def _check_eval(cfg: DictConfig) -> None:
    """The evaluate stage's settings and suites, checked at launch (nothing loads)."""
    from dataclasses import fields

    from midtrain.evals.settings import EvalSettings, check_eval_config

    for key, instead in _REMOVED.items():
        if key in cfg.stages.evaluate:
            raise ValueError(f"stages.evaluate.{key} was removed: {instead}")
    known = {*_EVALUATE_KEYS, *(f.name for f in fields(EvalSettings))}
    unknown = [str(k) for k in cfg.stages.evaluate if k not in known]
    if unknown:
        raise ValueError(f"stages.evaluate: unknown key(s) {unknown}; expected any of {sorted(known)}")
    check_eval_config(eval_config(cfg, RunDir.from_cfg(cfg).path), where="stages.evaluate.")


def evaluate_stages(cfg: DictConfig, run: RunDir, targets: dict[str, RunDir], force: bool = False) -> dict:
    """Run the configured eval suites on each target stage; results also land in each stage's metrics.json."""
    from midtrain.eval import evaluate

    out: dict[str, dict] = {}
    done_paths: dict[Path, str] = {}
    for name, stage in targets.items():
        if stage.path in done_paths:  # e.g. final is the instruct stage
            out[name] = out[done_paths[stage.path]]
            continue
        out[name] = evaluate(eval_config(cfg, stage.path, force))
        done_paths[stage.path] = name
    return out


def preset_defaults(config_name: str | None = None) -> DictConfig | None:
    """The preset this run was composed from, with no overrides: what `settings` is measured against."""
    try:
        if config_name is None:
            from hydra.core.hydra_config import HydraConfig

            config_name = HydraConfig.get().job.config_name if HydraConfig.initialized() else "pipeline"
        return compose_preset(str(config_name), [])
    except Exception as e:  # noqa: BLE001 - the settings summary must never stop a run
        log.warning("could not compose the preset's defaults (%s); metrics.json lists no settings", e)
        return None


def pipeline(cfg: DictConfig, defaults: DictConfig | None = None) -> dict:
    """Run midtrain -> instruct -> evaluate for one condition; return the combined metrics.

    Args:
        cfg: the composed `pipeline.yaml` config (or a sweep preset's).
        defaults: the preset composed without overrides; `metrics.json["settings"]` lists what
            differs from it. Composed from `conf/pipeline.yaml` when not given.
    """
    from midtrain.train import lock_wait

    _check(cfg)
    wait = lock_wait(cfg)
    run = RunDir.from_cfg(cfg)
    redo = cfg.get("redo")
    p = plan(cfg)
    if redo is None and is_complete(cfg, p):
        log.info("%s is DONE; nothing to do", run.path)
        return run.read_metrics()
    if global_rank() > 0:
        return _run_other_rank(run, p)
    with run.lock(wait=wait):
        if redo is None and is_complete(cfg, p):  # another process finished it while we waited
            log.info("%s is DONE; nothing to do", run.path)
            release_ranks(run.path, "done")
            return run.read_metrics()
        force_eval = _invalidate(cfg, run, p, redo)
        reused = reuse_stages(cfg, run, p)
        release_ranks(run.path, "run")
        return _run(cfg, run, p, force_eval, defaults, reused)


def _run_other_rank(run: RunDir, p: Plan) -> dict:
    """A rank other than 0 of a multi-task job: train each stage with rank 0, write nothing.

    Rank 0 holds the lock, clears what a redo names, exports, evaluates and writes every file;
    this rank joins each training stage once rank 0 has decided what runs.
    """
    from midtrain.train import train

    if wait_for_rank_zero(run.path) == "done":
        return {}
    for scfg in p.train.values():
        train(scfg)
    return {}


def reuse_stages(cfg: DictConfig, run: RunDir, p: Plan) -> dict[str, str]:
    """Link each training stage that this run has not started from a finished stage of another
    run with the same stage hash (`reuse_stages`: the sweep, the whole runs root, or off),
    in order, stopping at the first stage that must train. Returns `{stage: source directory}`."""
    from midtrain.tracking.reuse import candidates, reuse_stage

    scope = str(cfg.get("reuse_stages") or "off")
    reused: dict[str, str] = {}
    for name in p.train:
        if _stage_ok(run, name, p):
            continue
        src = reuse_stage(run.path / name, p.hashes[name],
                          candidates(run.path, name, scope, Path(str(cfg.paths.runs_root))))
        if src is None:
            break  # this stage trains, so every later one starts from a new model
        reused[name] = str(src)
    return reused


def _run(cfg: DictConfig, run: RunDir, p: Plan, force_eval: bool, defaults: DictConfig | None,
         reused: dict[str, str] | None = None) -> dict:
    from midtrain.train import train

    st = cfg.stages
    record_attempt(run.path, "pipeline")
    if defaults is None:
        defaults = preset_defaults("pipeline")
    metrics: dict = {
        "run_id": cfg.run_id,
        "run_hash": config_hash(cfg),
        "cell_hash": cell_hash(cfg),
        "stage": "pipeline",
        "condition": cfg.condition,
        "universe": cfg.get("universe"),
        "model": cfg.model.name,
        "corpus": cfg.corpus.name if "midtrain" in p.train else None,
        "num_docs": int(cfg.corpus.num_docs) if "midtrain" in p.train else 0,
        "instruct_samples": int(cfg.instruct.samples),
        "seed": int(cfg.seed),
        "preserve": str(cfg.preserve.name) if cfg.get("preserve") else "none",
        "settings": settings_diff(cfg, defaults),
        "stage_hashes": dict(p.hashes),
        "reused_stages": dict(reused or {}),  # stage -> the finished stage of another run it links
        "train": {},
    }
    stages: dict[str, RunDir] = {}

    for name, scfg in p.train.items():
        m = train(scfg)
        stages[name] = RunDir(scfg.run_dir)
        metrics["train"][name] = m["train"]
        if name == "midtrain" and "throughput" in m:
            metrics["throughput"] = m["throughput"]
    if "midtrain" not in p.train:
        log.info("midtraining skipped (condition %s, %d documents)", cfg.condition, int(cfg.corpus.num_docs))
    if "instruct" not in p.train:
        log.info("instruction tuning skipped (instruct.samples=0)")

    if not metrics["train"]:
        del metrics["train"]  # absent stages are absent keys

    if st.evaluate.enabled:
        if p.need_base:
            stages["base"] = export_base(cfg, run, p.hashes["base"])
        for name in st.evaluate.after:
            if name not in p.targets:
                log.info("evaluate.after names %s, which did not run in this condition", name)
        targets = {name: stages[s] for name, s in p.targets.items()}
        ev_dir = RunDir(run.path / "evaluate")
        if _stage_ok(run, "evaluate", p):
            by_stage = ev_dir.read_metrics()["by_stage"]
        else:
            ev_dir.clear_outputs()
            by_stage = evaluate_stages(cfg, run, targets, force=force_eval)
            ev_dir.write_metrics({"stage_hash": p.hashes["evaluate"], "by_stage": by_stage})
            ev_dir.mark_done(p.hashes["evaluate"])
        if "final" in by_stage:
            metrics["eval"] = by_stage["final"]
        metrics["eval_by_stage"] = {k: v for k, v in by_stage.items() if k != "final"}

    # This run's attempts and inputs, and each stage's (with their evaluation attempts).
    metrics["provenance"] = {**stage_provenance(run.path, cfg),
                             "stages": {name: s.read_metrics().get("provenance") for name, s in stages.items()}}
    run.write_metrics(metrics)
    _log_to_wandb(cfg, run, metrics)
    run.mark_done(metrics["run_hash"])
    return metrics


def _log_to_wandb(cfg: DictConfig, run: RunDir, metrics: dict) -> None:
    if cfg.logger.kind != "wandb":
        return
    from midtrain.tracking.wandb import init_run, log_summary

    wb = init_run(cfg, run.path, "pipeline")
    try:
        log_summary(wb, metrics)
    finally:
        wb.finish()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="pipeline")
def main(cfg: DictConfig) -> None:
    pipeline(cfg, defaults=preset_defaults())


if __name__ == "__main__":
    main()
