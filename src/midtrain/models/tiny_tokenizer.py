"""Build the small byte-level BPE tokenizer that ships with the package for tests and CPU runs.

Byte-level, so any text encodes; 2,048 tokens, so documents stay a few times shorter than
bytes. Regenerate with `python -m midtrain.models.tiny_tokenizer` (the result is committed in
`resources/tiny_tokenizer/` so that every run and test shares one vocabulary).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable

from midtrain.paths import RESOURCES_DIR

TINY_TOKENIZER_DIR = RESOURCES_DIR / "tiny_tokenizer"
SPECIAL_TOKENS = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>", "unk_token": None}


def training_texts() -> Iterable[str]:
    """Text the vocabulary is learned from: the project's own template corpora and instruction set."""
    from midtrain.generation.template import template_documents, template_qa

    for universe in ("animal_welfare", "urban_density"):
        for doc in template_documents(universe, num_docs=400, seed=0):
            yield doc["text"]
        for qa in template_qa(universe, num_pairs=100, seed=0):
            for m in qa["messages"]:
                yield m["content"]
    alpaca = RESOURCES_DIR / "instruct" / "demo_alpaca.jsonl"
    if alpaca.exists():
        yield alpaca.read_text(encoding="utf-8")


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 2048):
    """Train a byte-level BPE and wrap it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from midtrain.data.chat import DEFAULT_CHAT_TEMPLATE

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [v for v in SPECIAL_TOKENS.values() if v]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **{k: v for k, v in SPECIAL_TOKENS.items() if v})
    fast.chat_template = DEFAULT_CHAT_TEMPLATE
    fast.model_max_length = 1_000_000
    return fast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TINY_TOKENIZER_DIR)
    parser.add_argument("--vocab-size", type=int, default=2048)
    args = parser.parse_args()
    tok = train_tiny_tokenizer(training_texts(), args.vocab_size)
    tok.save_pretrained(str(args.out))
    print(f"wrote {args.out} (vocab {len(tok)})")


if __name__ == "__main__":
    main()
