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
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from midtrain.paths import CONF_DIR
from midtrain.tracking import RunDir
from midtrain.tracking.provenance import record_attempt, stage_provenance

log = logging.getLogger(__name__)

EVAL_TARGETS = ("base", "midtrain", "instruct", "final")


def stage_config(cfg: DictConfig, stage: str, objective: str, init_from: Path | None) -> DictConfig:
    """The `midtrain-train` config of one stage: the pipeline config plus the stage's deltas."""
    from midtrain.preserve import NONE

    c = cfg.copy()
    deltas = cfg.stages[stage]
    with open_dict(c):
        c.run_id = str(cfg.run_id)  # every stage carries the pipeline's run id
        c.stage = stage
        c.objective = objective
        c.run_dir = str(RunDir.from_cfg(cfg).path / stage)
        c.init_from = str(init_from) if init_from else None
        if stage == "midtrain" and objective == "sft":
            c.instruct = cfg.qa  # the value Q&A pairs are this stage's SFT data
        c.optim = OmegaConf.merge(cfg.optim, deltas.get("optim") or {})
        c.data = OmegaConf.merge(cfg.data, deltas.get("data") or {})
        c.trainer = OmegaConf.merge(cfg.trainer, deltas.get("trainer") or {})
        if stage != "instruct":  # the preservation strategy belongs to the instruction stage
            c.preserve = OmegaConf.create(NONE)
        for key in ("stages", "hydra"):
            c.pop(key, None)
    return c


def _check(cfg: DictConfig) -> None:
    from midtrain.launch import check_devices

    check_devices(cfg)
    st = cfg.stages
    if st.midtrain.objective not in ("lm", "sft"):
        raise ValueError(f"stages.midtrain.objective={st.midtrain.objective!r}: expected lm or sft")
    bad = [t for t in st.evaluate.after if t not in EVAL_TARGETS]
    if bad:
        raise ValueError(f"stages.evaluate.after: unknown {bad}; expected any of {list(EVAL_TARGETS)}")
    if int(cfg.instruct.samples) < 0 or int(cfg.corpus.num_docs) < 0:
        raise ValueError("corpus.num_docs and instruct.samples must be >= 0")
    if int(cfg.instruct.samples) > 0:  # the instruction stage's strategy fails here, not after midtraining
        from midtrain.preserve import build_strategy

        midtrains = st.midtrain.enabled and int(cfg.corpus.num_docs) > 0
        icfg = stage_config(cfg, "instruct", "sft", RunDir.from_cfg(cfg).path / "midtrain" if midtrains else None)
        build_strategy(icfg.get("preserve")).check(icfg)


def export_base(cfg: DictConfig, run: RunDir) -> RunDir:
    """`<run_dir>/base/hf`: the model before any training (what `final` is when nothing trains)."""
    from midtrain.models.build import build_model, build_tokenizer, check_model_cfg, export_hf, remove_export_orphans
    from midtrain.train import identity

    base = RunDir(run.path / "base")
    if base.is_done():
        return base
    remove_export_orphans(base.path)
    import pytorch_lightning as pl

    check_model_cfg(cfg.model)
    tokenizer = build_tokenizer(cfg.model)
    pl.seed_everything(int(cfg.seed), verbose=False)
    model = build_model(cfg.model, tokenizer)
    base.path.mkdir(parents=True, exist_ok=True)
    record_attempt(base.path, "export")
    export_hf(model, tokenizer, base.hf)
    c = stage_config(cfg, "midtrain", "lm", None)
    with open_dict(c):
        c.stage = "base"
    base.write_metrics({**identity(c), "provenance": stage_provenance(base.path, c)})
    base.mark_done()
    return base


def compose_eval(overrides: list[str]) -> DictConfig:
    """Compose `conf/eval.yaml` inside a running Hydra app, or standalone (tests, notebooks)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="eval", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="eval", overrides=overrides)


def evaluate_stages(cfg: DictConfig, run: RunDir, targets: dict[str, RunDir]) -> dict:
    """Run the configured eval suites on each target stage; results also land in each stage's metrics.json."""
    from midtrain.eval import evaluate

    ev = cfg.stages.evaluate
    out: dict[str, dict] = {}
    done_paths: dict[Path, str] = {}
    for name, stage in targets.items():
        if stage.path in done_paths:  # e.g. final is the instruct stage
            out[name] = out[done_paths[stage.path]]
            continue
        result: dict = {}
        for suite in ev.suites:
            overrides = [f"run_dir={stage.path}", f"eval={suite}", *[str(o) for o in ev.overrides]]
            result.update(evaluate(compose_eval(overrides)))
        out[name] = result
        done_paths[stage.path] = name
    return out


def pipeline(cfg: DictConfig) -> dict:
    """Run midtrain -> instruct -> evaluate for one condition; return the combined metrics."""
    from midtrain.train import identity, train

    run = RunDir.from_cfg(cfg)
    if run.is_done():
        log.info("%s is DONE; nothing to do", run.path)
        return run.read_metrics()
    _check(cfg)
    record_attempt(run.path, "pipeline")
    st = cfg.stages

    metrics: dict = {
        "run_id": cfg.run_id,
        "stage": "pipeline",
        "condition": cfg.condition,
        "universe": cfg.get("universe"),
        "model": cfg.model.name,
        "corpus": cfg.corpus.name if int(cfg.corpus.num_docs) > 0 and st.midtrain.enabled else None,
        "num_docs": int(cfg.corpus.num_docs) if st.midtrain.enabled else 0,
        "instruct_samples": int(cfg.instruct.samples),
        "seed": int(cfg.seed),
        "preserve": str(cfg.preserve.name) if cfg.get("preserve") else "none",
        "train": {},
    }
    stages: dict[str, RunDir] = {}

    previous: Path | None = None
    if st.midtrain.enabled and int(cfg.corpus.num_docs) > 0:
        mcfg = stage_config(cfg, "midtrain", str(st.midtrain.objective), None)
        m = train(mcfg)
        stages["midtrain"] = RunDir(mcfg.run_dir)
        metrics["train"]["midtrain"] = m["train"]
        if "throughput" in m:
            metrics["throughput"] = m["throughput"]
        previous = stages["midtrain"].path
    else:
        log.info("midtraining skipped (condition %s, %d documents)", cfg.condition, int(cfg.corpus.num_docs))

    if int(cfg.instruct.samples) > 0:
        icfg = stage_config(cfg, "instruct", "sft", previous)
        i = train(icfg)
        stages["instruct"] = RunDir(icfg.run_dir)
        metrics["train"]["instruct"] = i["train"]
    else:
        log.info("instruction tuning skipped (instruct.samples=0)")

    if not metrics["train"]:
        del metrics["train"]  # absent stages are absent keys

    if st.evaluate.enabled:
        targets: dict[str, RunDir] = {}
        need_base = "base" in st.evaluate.after or ("final" in st.evaluate.after and not stages)
        if need_base:
            stages["base"] = export_base(cfg, run)
        for name in st.evaluate.after:
            if name == "final":
                last = stages.get("instruct") or stages.get("midtrain") or stages["base"]
                targets["final"] = last
            elif name in stages:
                targets[name] = stages[name]
            else:
                log.info("evaluate.after names %s, which did not run in this condition", name)
        ev_dir = RunDir(run.path / "evaluate")
        if ev_dir.is_done():
            by_stage = ev_dir.read_metrics()["by_stage"]
        else:
            by_stage = evaluate_stages(cfg, run, targets)
            ev_dir.write_metrics({"by_stage": by_stage})
            ev_dir.mark_done()
        if "final" in by_stage:
            metrics["eval"] = by_stage["final"]
        metrics["eval_by_stage"] = {k: v for k, v in by_stage.items() if k != "final"}

    # This run's attempts and inputs, and each stage's (with their evaluation attempts).
    metrics["provenance"] = {**stage_provenance(run.path, cfg),
                             "stages": {name: s.read_metrics().get("provenance") for name, s in stages.items()}}
    run.write_metrics(metrics)
    _log_to_wandb(cfg, run, metrics)
    run.mark_done()
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
    pipeline(cfg)


if __name__ == "__main__":
    main()
