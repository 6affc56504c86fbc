"""`replay` and `interleave`: documents trained with the LM objective beside the SFT samples.

`preserve.share` is a share of tokens: replayed document tokens over all real (non-padding)
tokens of the stage, counted at tokenization (BOS and EOS included), as `corpus.mix.ratio`
counts them. Documents are added whole, so the share reached is the stated one or slightly
more (under one document); `metrics.json` records the share reached. The documents come from
a seeded permutation of the pool, taken as a prefix (passes over the pool repeat with a new
permutation when one pass is not enough), so a stage with more SFT samples replays a superset
of the documents of a stage with fewer: nested like every other subset.

Orders (`preserve.order`):
- `mix`: documents packed into the same rows as the SFT samples and shuffled with them, so
  every micro-batch holds document tokens beside SFT tokens in about the stated share;
- `interleave`: documents packed into rows of their own, spread at even intervals through the
  stage (`preserve=interleave`);
- `append`: document rows after all SFT rows, the stage's last steps (a control for
  `interleave`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from midtrain.preserve.base import ExtraData, Strategy

log = logging.getLogger(__name__)

ORDERS = ("mix", "interleave", "append")
SOURCES = ("midtrain", "corpus")


def interleave(main: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """`extra` spread at even intervals among `main` (each keeps its own order)."""
    total = len(main) + len(extra)
    is_extra = np.zeros(total, dtype=bool)
    if len(extra):
        is_extra[((np.arange(len(extra)) + 0.5) * total / len(extra)).astype(int)] = True
    out = np.empty(total, dtype=main.dtype if len(main) else extra.dtype)
    out[is_extra] = extra
    out[~is_extra] = main
    return out


def append(main: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """`extra` after all of `main`."""
    return np.concatenate([main, extra])


_PLACE = {"mix": None, "interleave": interleave, "append": append}


class Replay(Strategy):
    """Replay documents of the midtraining corpus (or any corpus) in the instruction stage."""

    def check(self, stage_cfg: DictConfig) -> None:
        p = self.cfg
        if stage_cfg.objective != "sft":
            raise ValueError(f"preserve={self.name} adds documents to an SFT stage (objective=sft); "
                             f"for documents beside documents use corpus.mix")
        share = float(p.share)
        if not 0.0 < share < 1.0:
            raise ValueError(f"preserve.share={p.share}: the replayed share of tokens must be in (0, 1)")
        if p.order not in ORDERS:
            raise ValueError(f"preserve.order={p.order!r}: expected one of {', '.join(ORDERS)}")
        if p.source not in SOURCES:
            raise ValueError(f"preserve.source={p.source!r}: expected one of {', '.join(SOURCES)}")
        if p.source == "midtrain" and not stage_cfg.get("init_from"):
            raise ValueError(
                f"preserve={self.name} with preserve.source=midtrain replays the documents of the stage this one "
                "starts from, but init_from is not set (a condition without midtraining); "
                "set preserve.source=corpus and preserve.corpus"
            )
        if p.source == "corpus" and not p.get("corpus"):
            raise ValueError(f"preserve={self.name} with preserve.source=corpus needs preserve.corpus (a corpus config)")

    def _pool(self, stage_cfg: DictConfig) -> tuple[list[dict], DictConfig]:
        from midtrain.data.corpus import load_corpus, load_pool

        if self.cfg.source == "corpus":
            corpus = self.cfg.corpus
            return load_pool(corpus), corpus
        saved = Path(str(stage_cfg.init_from)).expanduser() / "config.yaml"
        if not saved.exists():
            raise FileNotFoundError(f"preserve.source=midtrain: {saved} is missing, so the documents it trained on are unknown")
        prev = OmegaConf.load(saved)
        if prev.get("objective") != "lm":
            raise ValueError(
                f"preserve.source=midtrain: {saved} trained with objective={prev.get('objective')!r}, not on "
                "documents (objective=lm); set preserve.source=corpus and preserve.corpus"
            )
        return load_corpus(prev.corpus), prev.corpus

    def extra_data(self, stage_cfg: DictConfig, tokenizer: Any, segments: list) -> ExtraData:
        from midtrain.data.packing import lm_segment

        share = float(self.cfg.share)
        pool, corpus = self._pool(stage_cfg)
        if not pool:
            raise ValueError(f"preserve={self.name}: the replay corpus has no documents")
        prefix = tokenizer(corpus.doc_prefix, add_special_tokens=False)["input_ids"] if corpus.get("doc_prefix") else []
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        main_tokens = sum(len(s) for s in segments)
        main_labels = sum(sum(1 for t in s.labels if t != -100) for s in segments)
        want = main_tokens * share / (1.0 - share)
        seed = int(self.cfg.seed)
        docs: list = []
        got, passes = 0, 0
        while got < want:
            order = np.random.default_rng(seed if passes == 0 else [seed, passes]).permutation(len(pool))
            passes += 1
            for start in range(0, len(order), 256):  # tokenize only as much of the pool as is needed
                chunk = [pool[i]["text"] for i in order[start : start + 256]]
                for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
                    docs.append(lm_segment(ids, bos, eos, prefix))
                    got += len(docs[-1])
                    if got >= want:
                        break
                if got >= want:
                    break
        if passes > 1:
            log.warning("preserve=%s: %d documents give fewer tokens than share %.3f needs; the pool was repeated "
                        "(%d passes)", self.name, len(pool), share, passes)
        doc_labels = sum(sum(1 for t in s.labels if t != -100) for s in docs)
        info = {
            "replay_documents": len(docs),
            "replay_pool": len(pool),
            "replay_passes": passes,
            "replay_tokens": got,
            "replay_token_share": round(got / (got + main_tokens), 4),
            "replay_label_share": round(doc_labels / max(1, doc_labels + main_labels), 4),
        }
        log.info("preserve=%s (order %s): %s", self.name, self.cfg.order, info)
        return ExtraData(docs, place=_PLACE[str(self.cfg.order)], info=info)
