"""ANIMA questions and dimensions from a local directory or the hub, as Inspect samples.

inspect_evals' `anima` loads only from the hub and normalises the original questions'
null `language` to "English", which merges them with 4 later English rows. This module
adds what the project needs on top of inspect_evals' own record conversion:

- a local directory (offline clusters, the copy in `shared/`) holding `questions.jsonl`
  and `dimensions.jsonl` (or `questions/*.jsonl`, `dimensions/*.jsonl` as on the hub);
- the hub with a pinned revision, read through inspect_evals' loader;
- `subset="original"` (the paper's 26 English questions, `language` null or absent) or `"all"`;
- dimensions from another source than the questions (the paper's `ahb-original` questions
  are scored on the dimensions of `anima`), and tag renames and drops for older tag
  spellings (`TagMap`);
- validation that names the file, line and field before any model is called; an unknown
  tag is an error, never a silently dropped question.

Blank tags: ANIMA 2.1 has one question (id 58, line 59 of questions.jsonl) whose tags end
in "". The blank tag is dropped and the question kept, with a warning; inspect_evals drops
the whole question. Keeping it scores the question on the dimensions it does name.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping

from inspect_ai.dataset import MemoryDataset, Sample
from inspect_evals.anima.dataset import (
    DATASET_DEFAULT_REVISION,
    DATASET_REPO_ID,
)
from inspect_evals.anima.dataset import record_to_sample as _anima_record_to_sample
from inspect_evals.anima.types import AnimaDimension

# `language` may be absent (ahb-original has none): absent or null marks an original question.
QUESTION_FIELDS = ("id", "question", "tags", "variables")
DIMENSION_FIELDS = ("dimension", "guiding_question", "scoring", "observable_indicators")
SUBSETS = ("original", "all")
Subset = Literal["original", "all"]

logger = logging.getLogger(__name__)

__all__ = [
    "DATASET_DEFAULT_REVISION",
    "DATASET_REPO_ID",
    "AnimaData",
    "DatasetUnreachableError",
    "TagMap",
    "load_anima",
    "record_to_sample",
    "rows_to_dimensions",
]


class DatasetUnreachableError(ConnectionError):
    """A dataset had to come from the hub (or a URL), and it could not be reached."""


def hub_unreachable(what: str, error: BaseException, hint: str = "") -> DatasetUnreachableError:
    return DatasetUnreachableError(
        f"{what} must be downloaded, and the hub could not be reached and holds no cached copy "
        f"({type(error).__name__}: {error}). {hint}".strip()
    )


@dataclass(frozen=True)
class TagMap:
    """How question tags map onto dimension names: renames first, then drops."""

    renames: Mapping[str, str] = field(default_factory=dict)
    drops: frozenset[str] = frozenset()

    def apply(self, tags: list[str]) -> list[str]:
        return [self.renames.get(t, t) for t in tags if t not in self.drops and self.renames.get(t, t) not in self.drops]


class AnimaData:
    """Samples, dimensions and a revision label for one loaded copy of ANIMA."""

    def __init__(self, samples: list[Sample], dimensions: list[AnimaDimension], revision: str):
        self.samples = samples
        self.dimensions = dimensions
        self.revision = revision

    @property
    def dims_by_name(self) -> dict[str, AnimaDimension]:
        return {d.name: d for d in self.dimensions}

    def dataset(self, shuffle: bool = False, seed: int | None = None) -> MemoryDataset:
        ds = MemoryDataset(list(self.samples), name="anima", location=self.revision)
        if shuffle:
            ds.shuffle(seed=seed)
        return ds


def _split_files(data_dir: Path, config: str) -> list[Path]:
    """The JSONL file(s) of one dataset config: `<config>.jsonl` or `<config>/*.jsonl`."""
    single = data_dir / f"{config}.jsonl"
    if single.is_file():
        return [single]
    folder = data_dir / config
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"ANIMA dataset directory {data_dir} has no '{config}' config: expected "
            f"{single.name} or {config}/*.jsonl"
        )
    return files


def _read_rows(files: list[Path], fields: tuple[str, ...]) -> list[tuple[str, dict]]:
    """Rows with a `file:line` location each; every row must carry every field."""
    rows: list[tuple[str, dict]] = []
    for path in files:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e})") from e
            missing = [f for f in fields if f not in row]
            if missing:
                raise ValueError(f"{where}: missing field(s) {missing}")
            rows.append((where, row))
    if not rows:
        raise ValueError(f"no rows in {', '.join(map(str, files))}")
    return rows


def rows_to_dimensions(rows: Iterable[tuple[str, dict]]) -> list[AnimaDimension]:
    """Dimension rows to inspect_evals' `AnimaDimension` (same mapping as its hub loader)."""
    dims: list[AnimaDimension] = []
    for where, row in rows:
        if not row.get("dimension") or not row.get("guiding_question"):
            raise ValueError(f"{where}: 'dimension' and 'guiding_question' must be non-empty")
        dims.append(
            AnimaDimension(
                name=row["dimension"],
                weight=row.get("default_weighting") or 1.0,
                scoring_description=row["scoring"] or "",
                guiding_question=row["guiding_question"],
                indicators=row.get("observable_indicators") or "",
            )
        )
    names = [d.name for d in dims]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate ANIMA dimension names: {sorted(n for n in names if names.count(n) > 1)}")
    return dims


def record_to_sample(valid_dims: Iterable[str]):
    """inspect_evals' converter, plus `metadata["original"]` (the record's language is null).

    The upstream converter stores null languages as "English", so the paper's 26-question
    set can no longer be told apart from later English rows; this keeps that distinction.
    """
    convert = _anima_record_to_sample(valid_dims)

    def _convert(record: dict[str, Any]) -> Sample | list[Sample]:
        sample = convert(record)
        if isinstance(sample, Sample):
            sample.metadata = {**(sample.metadata or {}), "original": record.get("language") is None}
        return sample

    return _convert


def _questions_to_samples(
    rows: list[tuple[str, dict]], dims: list[AnimaDimension], tag_map: TagMap = TagMap()
) -> list[Sample]:
    valid = {d.name for d in dims}
    convert = record_to_sample(valid)
    samples: list[Sample] = []
    seen: set = set()
    for where, row in rows:
        if not isinstance(row["tags"], list):
            raise ValueError(f"{where}: 'tags' must be a list of dimension names")
        # Blank tags occur in the published data (a trailing "" on one translated row);
        # upstream would drop the whole question for it, so drop only the blank tag.
        tags = [t for t in row["tags"] if isinstance(t, str) and t.strip()]
        if len(tags) != len(row["tags"]):
            logger.warning("%s: ignoring %d blank dimension tag(s)", where, len(row["tags"]) - len(tags))
            row = {**row, "tags": tags}
        mapped = tag_map.apply(tags)
        if mapped != tags:
            row = {**row, "tags": mapped}
            tags = mapped
        if not tags:
            raise ValueError(f"{where}: 'tags' must name at least one dimension")
        unknown = [t for t in tags if t not in valid]
        if unknown:
            raise ValueError(f"{where}: unknown dimension tag(s) {unknown}; known: {sorted(valid)}")
        if not row["question"]:
            raise ValueError(f"{where}: empty 'question'")
        if row["id"] in seen:
            raise ValueError(f"{where}: duplicate question id {row['id']!r}")
        seen.add(row["id"])
        row = {"language": None, **row}
        sample = convert(row)
        assert isinstance(sample, Sample)  # every rejection case was raised above
        samples.append(sample)
    return samples


def _local_revision(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return f"local:{files[0].parent.name}@sha256:{digest.hexdigest()[:12]}"


QUESTIONS_FROM = ("data_dir", "config")


def _hub_rows(repo_id: str, revision: str, config: str, questions_from: str = "data_dir") -> list[tuple[str, dict]]:
    """Rows of one config from the hub through inspect_evals' retrying loader.

    `anima` keeps its questions in a `questions/` folder (read with `data_dir`, as
    inspect_evals does); `ahb-original` declares a `questions` config (`questions_from="config"`).
    """
    from inspect_evals.utils.huggingface import load_dataset

    try:
        if config == "questions" and questions_from == "data_dir":
            ds = load_dataset(repo_id, split="train", revision=revision, data_dir="questions")
        else:
            ds = load_dataset(repo_id, config, split="train", revision=revision)
    except (ConnectionError, OSError) as e:
        raise hub_unreachable(
            f"ANIMA {config} from the hub dataset {repo_id}@{revision}", e,
            "Point data_dir at a local copy (questions.jsonl and dimensions.jsonl), or fill the "
            "Hugging Face cache once with network access.",
        ) from e
    fields = QUESTION_FIELDS if config == "questions" else DIMENSION_FIELDS
    rows = []
    for i, row in enumerate(ds):
        where = f"{repo_id}@{revision}/{config}[{i}]"
        missing = [f for f in fields if f not in row]
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing}")
        rows.append((where, dict(row)))
    return rows


def load_anima(
    data_dir: str | Path | None = None,
    repo_id: str = DATASET_REPO_ID,
    revision: str = DATASET_DEFAULT_REVISION,
    subset: Subset = "original",
    *,
    dimensions_dir: str | Path | None = None,
    dimensions_repo_id: str | None = None,
    dimensions_revision: str | None = None,
    tag_map: TagMap = TagMap(),
    questions_from: str = "data_dir",
    expect_questions: int | None = None,
) -> AnimaData:
    """Load ANIMA from `data_dir` if given, else from the hub at a pinned `revision`.

    Args:
        data_dir: local directory with the `questions` config as JSONL (and `dimensions`,
            unless `dimensions_dir` is given).
        repo_id: hub dataset, used when `data_dir` is None.
        revision: hub commit SHA (pin it; tags move).
        subset: "original" = the questions with null or absent language (the paper's 26);
            "all" = every row (115 in revision 2.1).
        dimensions_dir: local directory with the `dimensions` config; None = `data_dir`.
        dimensions_repo_id: hub dataset of the dimensions; None = `repo_id`.
        dimensions_revision: its commit SHA; None = `revision`.
        tag_map: renames and drops applied to question tags before they are checked.
        questions_from: how the hub stores questions: "data_dir" (`questions/`) or "config".
        expect_questions: when set, exactly this many questions must be loaded.

    Returns:
        `AnimaData` with samples, dimensions, and a revision label: the hub SHA, or
        `local:<dir>@sha256:<digest>` of the local files.
    """
    if subset not in SUBSETS:
        raise ValueError(f"ANIMA subset must be one of {SUBSETS}, got {subset!r}")
    if questions_from not in QUESTIONS_FROM:
        raise ValueError(f"ANIMA questions_from must be one of {QUESTIONS_FROM}, got {questions_from!r}")

    def local_dir(path: str | Path, what: str) -> Path:
        p = Path(path).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"ANIMA {what} directory not found: {p}")
        return p

    labels = []
    if data_dir is not None:
        q_files = _split_files(local_dir(data_dir, "dataset"), "questions")
        q_rows = _read_rows(q_files, QUESTION_FIELDS)
    else:
        if not revision:
            raise ValueError("ANIMA from the hub needs a pinned revision (a commit SHA)")
        q_rows = None
    d_dir = dimensions_dir if dimensions_dir is not None else data_dir
    d_repo = dimensions_repo_id or repo_id
    d_rev = dimensions_revision or revision
    if d_dir is not None:
        d_files = _split_files(local_dir(d_dir, "dimensions"), "dimensions")
        dims = rows_to_dimensions(_read_rows(d_files, DIMENSION_FIELDS))
    else:
        if not d_rev:
            raise ValueError("ANIMA dimensions from the hub need a pinned revision (a commit SHA)")
        dims = rows_to_dimensions(_hub_rows(d_repo, d_rev, "dimensions"))
    if q_rows is None:
        q_rows = _hub_rows(repo_id, revision, "questions", questions_from)
    if data_dir is not None:
        labels.append(_local_revision(q_files + (d_files if d_dir == data_dir else [])))
    else:
        labels.append(f"{repo_id}@{revision}")
    if d_dir != data_dir or (d_dir is None and (d_repo, d_rev) != (repo_id, revision)):
        labels.append("dimensions=" + (_local_revision(d_files) if d_dir is not None else f"{d_repo}@{d_rev}"))
    label = " ".join(labels)
    samples = _questions_to_samples(q_rows, dims, tag_map)
    if subset == "original":
        samples = [s for s in samples if (s.metadata or {}).get("original")]
    if not samples:
        raise ValueError(f"no ANIMA questions left for subset={subset!r} ({label})")
    if expect_questions is not None and len(samples) != expect_questions:
        raise ValueError(
            f"expected {expect_questions} ANIMA questions for subset={subset!r}, loaded {len(samples)} ({label})"
        )
    return AnimaData(samples, dims, label)
