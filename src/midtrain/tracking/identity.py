"""Run identity: a short hash of every setting that can change a run's numbers.

A run directory is `<readable prefix>-<hash>`. The hash covers the canonical resolved config
(sorted keys, JSON) with a fixed list of keys left out: where files live, how progress is
shown or logged, which launcher or cluster account runs it, whether to redo it. Everything
else is in, so a config group added later is part of the identity unless it is named in
`EXCLUDE`. Inputs read from files enter by content, not by path: a corpus, instruction set
or Q&A file is hashed, so moving it changes nothing and editing it changes the identity; a
template corpus enters by its universe file and the template generator's wording
(`resources/template/prose.yaml`).

Each pipeline stage has its own hash over what that stage reads (`stage_hash`), written into
its `DONE` marker: a finished stage whose hash no longer matches is not reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from midtrain.tracking.nested import flatten, select

# Keys that cannot change a run's numbers. Dotted keys name one setting inside a group;
# a top-level name drops the whole group. Everything not listed is part of the identity.
EXCLUDE: tuple[str, ...] = (
    "hydra",              # Hydra's own node (launcher, sweeper, output dirs)
    "paths",              # where runs, corpora and caches live
    "logger",             # csv / wandb / none, project, entity
    "slurm",              # cluster account, partition, qos (conf/local)
    "run_id",             # derived from the identity
    "run_dir",
    "sweep_name",         # the folder a run is filed under
    "resume",             # how an interrupted run continues; the result is the same
    "reuse_stages",       # where a finished stage with the same stage hash may be linked from
    "redo",               # what to do again, not what to compute
    "lock",               # how a second writer is treated
    "condition",          # a label for reports; what it changes (universe, stages) is in the hash
    "stage",              # a stage's name; its place in the pipeline is in its inputs
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_every_n_steps",
    "trainer.cleanup_checkpoints",
    "trainer.probe_every_n_steps",  # logging only: the probe reads the model, never trains it
    "data.num_workers",   # the row order is fixed by the seed, whatever the loader's workers
)

# Groups that read a file named by `path` (or a local `hf_id` directory): hashed by content.
_FILE_GROUPS = ("corpus", "corpus.mix", "instruct", "qa", "preserve", "preserve.corpus")

_HASH_LEN = 8
_file_cache: dict[tuple[str, int, int], str] = {}


def _drop(tree: dict, dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if head not in tree:
        return
    if not rest:
        del tree[head]
    elif isinstance(tree[head], dict):
        _drop(tree[head], rest)


def file_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, or of a directory's files (names and bytes); cached per process
    by path, size and mtime, so asking again is free."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key in _file_cache:
        return _file_cache[key]
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and ".git" not in f.parts)
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    digest = h.hexdigest()
    _file_cache[key] = digest
    return digest


def _content(path_value: Any) -> Any:
    """What a `path` setting contributes: the content hash of the file it names."""
    if path_value in (None, "", "???"):
        return path_value
    from midtrain.data.corpus import resolve_path

    p = resolve_path(str(path_value))
    if p.exists():
        return {"sha256": file_fingerprint(p)}
    return {"absent": p.name}  # a missing input fails validation; the name keeps jobs apart meanwhile


def _upstream(stage_dir: str) -> Any:
    """A stage started from another one depends on that stage's identity, not on its path."""
    p = Path(stage_dir).expanduser()
    try:
        recorded = json.loads((p / "DONE").read_text(encoding="utf-8")).get("hash")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded:
        return {"stage_hash": recorded}
    if (p / "hf").is_dir():
        return {"hf_sha256": file_fingerprint(p / "hf")}
    return {"absent": p.name}


def _universe_file(name: Any) -> Any:
    from midtrain.paths import CONF_DIR

    p = CONF_DIR / "universe" / f"{name}.yaml"
    return {"sha256": file_fingerprint(p)} if p.is_file() else None


def _template_prose() -> dict:
    """The wording the template generator renders with (package data), by content."""
    from midtrain.generation.template import PROSE_PATH

    return {"sha256": file_fingerprint(PROSE_PATH)}


def _by_content(tree: dict) -> None:
    """Replace file paths by content hashes in every group that reads a file."""
    for group in _FILE_GROUPS:
        node = select(tree, group)
        if not isinstance(node, dict):
            continue
        if "path" in node:
            node["path"] = _content(node["path"])
        hf_id = node.get("hf_id")
        if isinstance(hf_id, str) and hf_id not in ("", "???") and Path(hf_id).expanduser().exists():
            node["hf_id"] = _content(hf_id)
        if node.get("source") == "template" and node.get("universe"):  # rendered from these two files
            node["universe_file"] = _universe_file(node["universe"])
            node["template_prose"] = _template_prose()
    init = tree.get("init_from")
    if isinstance(init, str) and init:
        tree["init_from"] = _upstream(init)
    model = tree.get("model")
    if isinstance(model, dict):
        for key in ("name_or_path", "gguf_file", "tokenizer"):
            v = model.get(key)
            if isinstance(v, str) and v not in ("", "???") and not v.startswith(("builtin:", "package:")):
                if Path(v).expanduser().exists():
                    model[key] = _content(v)


def canonical(cfg: DictConfig | Mapping, exclude: Iterable[str] = EXCLUDE) -> dict:
    """The resolved config that the identity is computed over: excluded keys removed, file
    inputs replaced by their content hashes."""
    exclude = tuple(exclude)
    top = {e for e in exclude if "." not in e}
    if isinstance(cfg, DictConfig):
        # Resolve only what is kept: run_id and run_dir interpolate the hash itself.
        tree = {str(k): OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                for k in cfg.keys() if str(k) not in top}
    else:
        tree = {k: v for k, v in json.loads(json.dumps(dict(cfg))).items() if k not in top}
    for e in exclude:
        if "." in e:
            _drop(tree, e)
    _by_content(tree)
    return tree


def digest(tree: Any, length: int = _HASH_LEN) -> str:
    text = json.dumps(tree, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def config_hash(cfg: DictConfig | Mapping, exclude: Iterable[str] = EXCLUDE) -> str:
    """The run hash: short sha256 of `canonical(cfg)`."""
    return digest(canonical(cfg, exclude))


# What a training stage does not read, by objective (the pipeline's Q&A group is copied into
# `instruct` when the instruction-tuning baseline trains on it).
STAGE_EXCLUDE = {"lm": ("instruct", "qa"), "sft": ("qa",)}


def stage_hash(cfg: DictConfig, upstream: str | None = None) -> str:
    """The hash of one training stage's config: what that stage reads, and the stage it starts
    from by that stage's hash (`upstream`, else the hash in `<init_from>/DONE`)."""
    tree = canonical(cfg, (*EXCLUDE, *STAGE_EXCLUDE.get(str(cfg.get("objective")), ())))
    if upstream is not None:
        tree["init_from"] = {"stage_hash": upstream}
    return digest(tree)


_SEED_SENTINEL = 0


def _seed_fixed(cfg: DictConfig | Mapping) -> DictConfig | Mapping:
    """The config with the training seed set to one fixed value, so that every setting derived
    from it (`corpus.seed: ${seed}`, a seed's own draw of documents) takes that value too:
    such a setting varies with the seed, exactly as the seed does, and is averaged over with
    it. A setting given its own value (`corpus.seed=5`) is unaffected."""
    if not isinstance(cfg, DictConfig) or "seed" not in cfg:
        return cfg
    c = cfg.copy()
    OmegaConf.set_readonly(c, False)
    with open_dict(c):
        c.seed = _SEED_SENTINEL
    return c


def cell_hash(cfg: DictConfig | Mapping) -> str:
    """The hash of everything but the training seed and what derives from it: runs a report
    may average over."""
    return digest(canonical(_seed_fixed(cfg), (*EXCLUDE, "seed")))


def settings_diff(cfg: DictConfig | Mapping, defaults: DictConfig | Mapping | None) -> dict[str, Any]:
    """The identity settings whose values differ from `defaults` (the preset composed with no
    overrides), as `{dotted key: value}`; secrets redacted. Settings that only follow the
    seed (`corpus.seed: ${seed}`) are not listed: `seed` stands for them."""
    from midtrain.tracking.secrets import redact_config

    if defaults is None:
        return {}
    now, base = flatten(canonical(_seed_fixed(cfg))), flatten(canonical(_seed_fixed(defaults)))
    diff = {k: now.get(k) for k in sorted(set(now) | set(base)) if now.get(k) != base.get(k)}
    seed, default_seed = cfg.get("seed"), defaults.get("seed")
    if seed != default_seed:
        diff["seed"] = seed
    return redact_config(dict(sorted(diff.items())))


def _hash_resolver(*, _root_: DictConfig) -> str:
    return config_hash(_root_)


def register_resolvers() -> None:
    """`${midtrain.hash:}` (the run hash of the config it sits in) and `${midtrain.repo:<rel>}`
    (an absolute path inside the repository)."""
    from midtrain.paths import REPO_ROOT

    if not OmegaConf.has_resolver("midtrain.hash"):
        OmegaConf.register_new_resolver("midtrain.hash", _hash_resolver)
    if not OmegaConf.has_resolver("midtrain.repo"):
        OmegaConf.register_new_resolver("midtrain.repo", lambda rel="": str(REPO_ROOT / str(rel)))
