"""Typed schemas of the config groups whose options share their keys: `model` and `corpus`.

Each option file of these groups starts its defaults list with its schema, a dataclass
stored here under that group (Hydra's structured config schema pattern): `_schema`, or a
variant of it that marks the keys its kind of option requires (`_hub`: a hub id and its
pinned revision; `_jsonl`: a file). The option file holds only the keys that differ.

A key has one default and one type, stated here once; a wrong type or an unknown key, in an
option file, an experiment or an override, fails at composition with the key named. Values
(which sources exist, whether a hub id has its revision) are checked by the code that reads
them, before any expensive work.

Types only, no Enums: a resolved value must stay the plain string the run hash was computed
over (`tracking/identity.py`). Free-form nodes (`model.config`, `model.lora`, `corpus.mix`)
stay untyped: a schema for them would add keys to nodes that enter the hash. `lora` and `mix`
are `Any` rather than `Optional[Dict]`, which OmegaConf 2.3 cannot fill from null by a
`+key={...}` override.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelConfig:
    """The model a stage trains (built by `midtrain.models.build`)."""

    name: str = MISSING                     # readable label in run ids and reports
    source: str = MISSING                   # config: random init from `config` | pretrained: hub id or dir | gguf
    name_or_path: Optional[str] = None      # pretrained: hub id or local directory
    revision: Optional[str] = None          # pretrained hub id: pinned commit hash of the hub repo
    gguf_file: Optional[str] = None         # gguf: package:<module>[/<file.gguf>] (an installed package's) or a path
    bos_token: Optional[str] = None         # token that starts each document (None = the tokenizer's BOS)
    tokenizer: Optional[str] = None         # None = the model's own | builtin:tiny | a tokenizer directory
    dtype: str = "float32"                  # weight dtype at load; training precision is trainer.precision
    attn_implementation: str = "auto"       # auto | flash_attention_2 | flex_attention | sdpa | eager
    config: Dict[str, Any] = field(default_factory=dict)  # source=config: LlamaConfig fields
    lora: Any = None                        # e.g. {r: 16, alpha: 32, dropout: 0.0, target_modules: [q_proj, v_proj]}


@dataclass
class CorpusConfig:
    """The documents a midtraining stage draws from (loaded by `midtrain.data.corpus`)."""

    name: str = MISSING                     # readable label in run ids and reports
    source: str = "jsonl"                   # jsonl | hf | template
    universe: Optional[str] = None          # the universe the documents were written for; template: the one rendered
    path: Optional[str] = None              # jsonl: a documents.jsonl
    hf_id: Optional[str] = None             # hf: hub dataset id, or a local dataset directory
    revision: Optional[str] = None          # hf: pinned commit hash (required for a hub id)
    split: str = "train"
    text_field: str = "text"                # field (column) holding each document
    num_docs: int = 3000                    # documents drawn, nested (N are a prefix of N+k); the paper's main runs: 2500-3000
    seed: int = 0                           # which documents are drawn
    pool_size: Optional[int] = None         # template: size of the rendered pool to draw from
    doc_prefix: str = ""                    # text put before every document; its tokens get no loss (e.g. '<DOCTAG> ')
    drop_duplicates: bool = False           # true: exact repeats leave the pool before drawing (always counted in metrics)
    mix: Any = None                         # a second corpus: {source, path, hf_id, revision, split, text_field, ratio, ...}


# A `???` in an option file cannot undo a schema default (a merge keeps the value a missing
# one would replace), so a key that some options require has its own schema with no default.
@dataclass
class HubModelConfig(ModelConfig):
    """A model from the Hugging Face hub: its id and a pinned commit are required."""

    source: str = "pretrained"
    name_or_path: Optional[str] = MISSING   # hub id (or a local directory)
    revision: Optional[str] = MISSING       # a pinned commit hash of the hub repo


@dataclass
class JsonlCorpusConfig(CorpusConfig):
    """Documents from a JSONL file (one object a line with the text field): its path is required."""

    source: str = "jsonl"
    path: Optional[str] = MISSING


@dataclass
class HubCorpusConfig(CorpusConfig):
    """A dataset from the Hugging Face hub (or a local copy): its id and a pinned commit are required."""

    source: str = "hf"
    hf_id: Optional[str] = MISSING          # hub dataset id, or a local dataset directory
    revision: Optional[str] = MISSING       # pinned commit hash of the dataset repo (required for a hub id)


# `<group>/<name>` in Hydra's ConfigStore: the names option files list first in their defaults.
SCHEMAS: dict[str, dict[str, type]] = {
    "model": {"_schema": ModelConfig, "_hub": HubModelConfig},
    "corpus": {"_schema": CorpusConfig, "_jsonl": JsonlCorpusConfig, "_hub": HubCorpusConfig},
}


def register_schemas() -> None:
    """Store every schema in Hydra's ConfigStore (storing again replaces: idempotent)."""
    store = ConfigStore.instance()
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            store.store(group=group, name=name, node=node)
