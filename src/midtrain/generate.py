"""midtrain-generate: a treatment or control corpus of synthetic documents, or Q&A pairs.

`generate(cfg)` validates everything (universe, counts, model provider, API key, the output
folder's identity) before the first request, then runs the writer of `generator.kind` (an
entry of `GENERATOR_KINDS`: the offline templates of `midtrain.generation.template`, or the
LLM pipeline of `midtrain.generation.llm`) and writes `documents.jsonl` (or `qa.jsonl`) and
`manifest.json` into `out_dir`, both atomically.
Re-running continues where the last run stopped: every finished request is on disk under
`out_dir/stages/`.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from midtrain import __version__
from midtrain.generation import template as tmpl
from midtrain.generation.filters import FilterConfig, count_tokens, count_words, length_stats
from midtrain.generation.match import load_match
from midtrain.generation.universe import Universe, universe_from_mapping
from midtrain.generation.variety import diversity_stats
from midtrain.paths import CONF_DIR
from midtrain.providers import check_client, check_model_access
from midtrain.tracking import atomic_write_json, atomic_write_text, read_json, redact_config

log = logging.getLogger(__name__)

IDENTITY_FILE = "generation.json"
OUTPUT_FILES = {"documents": "documents.jsonl", "qa": "qa.jsonl"}


# Validation ----------------------------------------------------------------------------
def _filters(cfg: DictConfig) -> FilterConfig:
    f = OmegaConf.to_container(cfg.filters, resolve=True)
    f["placeholder_patterns"] = tuple(f.get("placeholder_patterns") or ())
    try:
        return FilterConfig(**f)
    except TypeError as e:
        raise ValueError(f"filters: unexpected key ({e})") from e


def _model_args(gen: DictConfig) -> dict:
    args = gen.get("model_args")
    return OmegaConf.to_container(args, resolve=True) if args is not None else {}


def check_model_path(gen: DictConfig) -> str | None:
    """The `generator.model_path` spec after checking it names something that exists (None if unset).

    A local Hugging Face directory, a `.gguf` file, or `package:<module>[/<file>.gguf]` (a GGUF
    file shipped in an installed package); GGUF files are converted once by `build_model`.
    """
    spec = gen.get("model_path")
    if not spec:
        return None
    spec = str(spec)
    if not str(gen.model).startswith("hf/"):
        raise ValueError(f"generator.model_path={spec!r} is for the hf/ provider, but generator.model={gen.model!r}")
    if spec.startswith("package:") or spec.endswith(".gguf"):
        from midtrain.models.gguf import resolve_gguf_file

        try:
            resolve_gguf_file(spec)
        except (FileNotFoundError, ImportError, ValueError) as e:
            raise ValueError(f"generator.model_path={spec!r}: {e}") from e
    elif not (Path(spec).expanduser() / "config.json").is_file():
        raise ValueError(f"generator.model_path={spec!r}: not a Hugging Face model directory (no config.json)")
    return spec


def _local_weights(spec: str) -> str:
    if spec.startswith("package:") or spec.endswith(".gguf"):
        from midtrain.models.gguf import converted_gguf_dir

        return str(converted_gguf_dir(spec))
    return str(Path(spec).expanduser())


def build_model(gen: DictConfig) -> Any:
    """An inspect-ai Model for the generator config; provider errors are raised before any request."""
    from inspect_ai.model import GenerateConfig, get_model

    model_args = _model_args(gen)
    check_model_access(gen.model, model_args)
    check_client(gen.model, "generator.model")
    spec = check_model_path(gen)
    if spec:
        model_args["model_path"] = _local_weights(spec)
    if gen.get("cpu_threads"):  # a local model in this process: torch's intra-op threads
        import torch

        torch.set_num_threads(int(gen.cpu_threads))
    config = GenerateConfig(
        temperature=gen.temperature, max_tokens=gen.max_tokens, max_connections=gen.max_connections,
        max_retries=gen.max_retries, timeout=gen.timeout, seed=gen.get("seed"),
    )
    try:
        return get_model(gen.model, config=config, base_url=gen.get("model_base_url"), memoize=False, **model_args)
    except Exception as e:  # unknown provider, missing provider package, bad model args
        raise ValueError(f"generator.model={gen.model!r}: inspect-ai cannot create this model: {e}") from e


def _identity(cfg: DictConfig, universe: Universe) -> dict:
    return {"universe": universe.name, "seed": int(cfg.seed), "mode": str(cfg.mode),
            "generator": str(cfg.generator.name), "model": cfg.generator.get("model")}


# What generation writes into out_dir (and Hydra's log folders, which exist before it runs).
OWNED = {IDENTITY_FILE, "config.yaml", "manifest.json", "stages", ".hydra_logs", ".multirun", *OUTPUT_FILES.values()}


HYDRA_DIRS = {".hydra_logs", ".multirun"}


def foreign_files(out_dir: Path) -> list[str]:
    """Entries of out_dir that generation did not write (its own temp files count as its own).

    Without `generation.json` (the first file generation writes) nothing but Hydra's log
    folders is generation's, whatever its name: a hand-made `documents.jsonl` is the user's.
    """
    if not out_dir.is_dir():
        return []
    ours = OWNED if (out_dir / IDENTITY_FILE).is_file() else HYDRA_DIRS

    def owned(name: str) -> bool:
        return name in ours or (name.startswith(".") and name.endswith(".tmp")
                                and name[1:].split(".tmp")[0].rsplit(".", 1)[0] in ours)

    return sorted(p.name for p in out_dir.iterdir() if not owned(p.name))


def check_out_dir(out_dir: Path, identity: dict) -> None:
    """Refuse an out_dir holding files generation did not write, or a corpus with a different
    identity (universe, seed, mode, model)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir {out_dir} is a file, not a folder")
    foreign = foreign_files(out_dir)
    if foreign:
        shown = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more" if len(foreign) > 10 else "")
        raise ValueError(f"out_dir {out_dir} holds files midtrain-generate did not write ({shown}); "
                         "choose an empty or new out_dir, or move them away")
    path = out_dir / IDENTITY_FILE
    if not path.exists():
        return
    old = read_json(path)
    diff = {k: (old.get(k), v) for k, v in identity.items() if old.get(k) != v}
    if diff:
        desc = ", ".join(f"{k}: {a!r} on disk vs {b!r} requested" for k, (a, b) in diff.items())
        raise ValueError(f"out_dir {out_dir} already holds a corpus made with different settings ({desc}); "
                         "choose another out_dir or delete it")


# Generator kinds -----------------------------------------------------------------------
@dataclass(frozen=True)
class GeneratorKind:
    """How one `generator.kind` writes a corpus (`generator.name` is only the preset's label).

    A new kind is one entry of `GENERATOR_KINDS` and a preset `conf/generator/<name>.yaml`
    with `kind: <kind>`; nothing else here names kinds.

    Attributes:
        check: `(cfg, universe)`, every check of the kind's own settings, run by `validate`
            before anything is written; raises ValueError naming the key at fault.
        write: `(cfg, universe, filters, match, model, out_dir) -> (records, parts)` for
            `cfg.mode`: the records that passed `filters`, and the manifest's account of them
            (`candidates`, `rejected`, `passed_filters`, ...).
        source: the manifest's `source` label of the kind's corpora.
        build_model: `generator config -> inspect-ai Model`, for a kind that writes with a
            model (none is built when `generate` is given one).
        smoke: the kind's corpora are for demos and tests, not for science.
    """

    check: Callable[[DictConfig, Universe], None]
    write: Callable[..., tuple[list[dict], dict]]
    source: str
    build_model: Callable[[DictConfig], Any] | None = None
    smoke: bool = False


def _check_template(cfg: DictConfig, universe: Universe) -> None:
    tmpl.template_block(universe)


def _write_template(cfg: DictConfig, universe: Universe, filters: FilterConfig, match, model: Any,
                    out_dir: Path) -> tuple[list[dict], dict]:
    if cfg.mode == "documents":
        return tmpl.generate_documents_template(universe, int(cfg.num_docs), int(cfg.seed), filters, match)
    return tmpl.generate_qa_template(universe, int(cfg.num_docs), int(cfg.seed), filters)


def _check_llm(cfg: DictConfig, universe: Universe) -> None:
    if OmegaConf.is_missing(cfg.generator, "model"):
        raise ValueError("generator.model is required for LLM generation, e.g. generator.model=anthropic/claude-sonnet-4-5")
    check_model_access(cfg.generator.model, _model_args(cfg.generator))
    check_model_path(cfg.generator)


def _write_llm(cfg: DictConfig, universe: Universe, filters: FilterConfig, match, model: Any,
               out_dir: Path) -> tuple[list[dict], dict]:
    from midtrain.generation.llm import generate_documents_llm, generate_qa_llm

    settings = _settings(cfg.generator)
    if cfg.mode == "documents":
        return generate_documents_llm(universe, model, out_dir, num_docs=int(cfg.num_docs), seed=int(cfg.seed),
                                      settings=settings, filters=filters, match=match, progress=bool(cfg.progress))
    return generate_qa_llm(universe, model, out_dir, num_pairs=int(cfg.num_docs), seed=int(cfg.seed),
                           settings=settings, filters=filters, progress=bool(cfg.progress))


def _settings(gen: DictConfig):
    from inspect_ai.model import CachePolicy

    from midtrain.generation.llm import LLMSettings

    kwargs = {"cache": CachePolicy(expiry=gen.cache_expiry) if gen.cache else False}
    return LLMSettings(num_doc_types=gen.num_doc_types, num_ideas=gen.num_ideas, oversample=gen.oversample,
                       revise=gen.revise, concurrency=gen.max_connections,
                       questions_per_request=gen.questions_per_request, qa_min_words=gen.qa_min_words,
                       qa_max_words=gen.qa_max_words, variety=bool(gen.get("variety", True)),
                       doc_type_quota=gen.get("doc_type_quota"), list_max_tokens=gen.get("list_max_tokens"),
                       generate_kwargs=kwargs)


GENERATOR_KINDS: dict[str, GeneratorKind] = {
    # The offline smoke templates (`midtrain.generation.template`): no model, no network.
    "template": GeneratorKind(check=_check_template, write=_write_template, source=tmpl.SMOKE_SOURCE, smoke=True),
    # The LLM pipeline (`midtrain.generation.llm`) over inspect-ai's model API.
    "llm": GeneratorKind(check=_check_llm, write=_write_llm, source="llm", build_model=build_model),
}


def generator_kind(cfg: DictConfig) -> GeneratorKind:
    """The entry of `generator.kind`; raises ValueError naming the known kinds."""
    kind = cfg.generator.get("kind")
    if kind not in GENERATOR_KINDS:
        raise ValueError(f"generator.kind={kind!r}: expected one of {sorted(GENERATOR_KINDS)}")
    return GENERATOR_KINDS[kind]


def validate(cfg: DictConfig) -> tuple[Universe, FilterConfig, Path]:
    """Every check that must pass before the first request; returns the parsed pieces."""
    missing = [k for k in ("out_dir", "num_docs") if OmegaConf.is_missing(cfg, k)]
    if missing:
        raise ValueError(f"missing required key(s) {missing}: e.g. num_docs=50 out_dir=corpora/aw")
    if not isinstance(cfg.num_docs, int) or isinstance(cfg.num_docs, bool) or cfg.num_docs <= 0:
        raise ValueError(f"num_docs must be a positive integer, got {cfg.num_docs!r}")
    if cfg.mode not in OUTPUT_FILES:
        raise ValueError(f"mode must be one of {sorted(OUTPUT_FILES)}, got {cfg.mode!r}")
    if cfg.mode == "qa" and cfg.get("match_to"):
        raise ValueError("match_to applies to mode=documents only (a control corpus); unset it for mode=qa")
    universe = universe_from_mapping(cfg.universe, "config key 'universe'")
    filters = _filters(cfg)
    generator_kind(cfg).check(cfg, universe)
    share = cfg.get("max_shortfall_share")
    if share is not None and not (isinstance(share, (int, float)) and 0 <= share <= 1):
        raise ValueError(f"max_shortfall_share must be null or a number in [0, 1], got {share!r}")
    out_dir = Path(str(cfg.out_dir)).expanduser()
    return universe, filters, out_dir


# Generation ----------------------------------------------------------------------------
def generate(cfg: DictConfig, model: Any = None) -> dict:
    """Generate a corpus into `cfg.out_dir`; return its manifest.

    Args:
        cfg: a config composed from conf/generate.yaml.
        model: an inspect-ai Model to use instead of building one from `cfg.generator`
            (tests pass a scripted `mockllm/model`).

    Raises:
        ValueError: bad input (empty universe, num_docs <= 0, unknown provider, missing API
            key, an out_dir holding a different corpus), always before the first request.
    """
    universe, filters, out_dir = validate(cfg)
    match = load_match(cfg.match_to) if cfg.get("match_to") else None
    identity = _identity(cfg, universe)
    check_out_dir(out_dir, identity)
    kind = generator_kind(cfg)
    if kind.build_model is not None and model is None:
        model = kind.build_model(cfg.generator)

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / IDENTITY_FILE, identity)
    own_keys = [k for k in cfg if k != "hydra"]  # Hydra's own node is not part of the corpus
    resolved = redact_config(OmegaConf.to_container(OmegaConf.masked_copy(cfg, own_keys), resolve=True))
    atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(resolved))

    records, parts = kind.write(cfg, universe, filters, match, model, out_dir)

    doc_tag = str(cfg.get("doc_tag") or "")
    if doc_tag and cfg.mode == "documents":  # the tag travels with each document, outside its text
        records = [{**r, "doc_prefix": doc_tag} for r in records]
    out_file = out_dir / OUTPUT_FILES[cfg.mode]
    atomic_write_text(out_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    manifest = _manifest(cfg, universe, records, parts, match, out_file)
    atomic_write_json(out_dir / "manifest.json", manifest)
    if manifest["shortfall"]:
        reasons = _shortfall_reasons(parts)
        msg = (f"{out_file}: wrote {len(records)} of {cfg.num_docs} requested ({reasons}); re-run to retry "
               "failed requests or raise generator.oversample")
        share = cfg.get("max_shortfall_share")
        if (not records) if share is None else manifest["shortfall"] / int(cfg.num_docs) > float(share):
            limit = "nothing written" if share is None else f"more than max_shortfall_share={share} missing"
            raise GenerationShortfall(f"{msg} [{limit}]")
        log.warning(msg)
    else:
        log.info("%s: wrote %d %s", out_file, len(records), cfg.mode)
    return manifest


class GenerationShortfall(RuntimeError):
    """Fewer records than allowed were written (after writing what there is and the manifest)."""


def _shortfall_reasons(parts: dict) -> str:
    """Per-reason counts of what did not become a record: failed or missing requests, then filter rejections."""
    counts = {**(parts.get("not_ready") or {}), "upstream_unparseable": parts.get("upstream_unparseable", 0),
              **{f"rejected:{k}": v for k, v in (parts.get("rejected") or {}).items()}}
    return ", ".join(f"{k}={v}" for k, v in counts.items() if v) or "no candidates"


def _texts(records: list[dict], mode: str) -> list[str]:
    return [r["text"] if mode == "documents" else r["messages"][-1]["content"] for r in records]


def _dedup_checked(cfg: DictConfig, parts: dict) -> int | None:
    """How many texts went through the near-duplicate check (None when it is off)."""
    if cfg.filters.get("dedup_threshold") is None:
        return None
    if "dedup_checked" in parts:
        return int(parts["dedup_checked"])
    return int(parts.get("passed_filters", 0)) + int(parts.get("rejected", {}).get("near_duplicate", 0))


def _manifest(cfg: DictConfig, universe: Universe, records: list[dict], parts: dict, match, out_file: Path) -> dict:
    texts = _texts(records, cfg.mode)
    tokens = [count_tokens(t) for t in texts]
    gen = redact_config(OmegaConf.to_container(cfg.generator, resolve=True))
    kind = generator_kind(cfg)
    manifest = {
        "mode": cfg.mode,
        "file": out_file.name,
        "universe": universe.name,
        "universe_digest": universe.digest(),
        "seed": int(cfg.seed),
        "smoke": kind.smoke,
        "source": kind.source,
        "generator": gen,
        "model": cfg.generator.get("model"),
        "num_requested": int(cfg.num_docs),
        "num_written": len(records),
        "doc_tag": str(cfg.get("doc_tag") or "") if cfg.mode == "documents" else "",
        "shortfall": max(0, int(cfg.num_docs) - len(records)),
        **parts,
        "filters": OmegaConf.to_container(cfg.filters, resolve=True),
        "facts": dict(sorted(Counter(r["fact"] for r in records).items())),
        "token_counter": "regex words and punctuation marks",
        "tokens": length_stats(tokens),
        "words": length_stats([count_words(t) for t in texts]),
        "diversity": diversity_stats(texts, parts.get("rejected"), _dedup_checked(cfg, parts)),
        "version": __version__,
    }
    if cfg.mode == "documents":
        manifest["doc_types"] = dict(sorted(Counter(r["doc_type"] for r in records).items()))
    if match is not None:
        manifest["match"] = match.compare(tokens, manifest["doc_types"])
    return manifest


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="generate")
def main(cfg: DictConfig) -> None:
    """Console entry point `midtrain-generate`."""
    try:
        manifest = generate(cfg)
    except GenerationShortfall as e:
        raise SystemExit(f"error: {e}") from e
    print(json.dumps({k: manifest[k] for k in ("file", "num_written", "num_requested", "rejected")}))


if __name__ == "__main__":
    main()
