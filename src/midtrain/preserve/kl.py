"""`kl`: a KL penalty to a frozen reference model on the stage's labelled (SFT) tokens.

    loss = CE + sum_t beta_t * KL_t / (labelled tokens)

where CE is the usual mean next-token cross-entropy over labelled tokens and KL_t is the
exact KL divergence over the vocabulary at labelled position t: `reverse` = KL(model ||
reference) (as in RLHF's penalty), `forward` = KL(reference || model) (distillation's).
beta_t is `preserve.beta`, or `preserve.first_beta` on the first `preserve.first_tokens`
labelled tokens of each answer (token-wise constrained SFT: the first answer tokens are
where fine-tuning moves a model most). The reference is, by default, a frozen copy of the
model the stage starts from (for the pipeline: the midtrained model); it runs without
gradients inside the same autocast as the trained model, with its weights in the trained
model's dtype, and is not part of checkpoints (a resumed stage rebuilds it from the same
starting weights). It costs one more forward pass per micro-batch and a second copy of the
weights on every device, so it is not offered with FSDP.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from omegaconf import DictConfig

from midtrain.data.packing import IGNORE_INDEX
from midtrain.preserve.base import Strategy

DIRECTIONS = ("reverse", "forward")


def answer_positions(mask: torch.Tensor) -> torch.Tensor:
    """1-based index of each True within its run of consecutive Trues along the last dim (0 where False)."""
    c = mask.long().cumsum(-1)
    last_reset = torch.where(mask, torch.zeros_like(c), c).cummax(-1).values
    return (c - last_reset) * mask


def token_kl(logits: torch.Tensor, ref_logits: torch.Tensor, direction: str = "reverse") -> torch.Tensor:
    """Per-row KL over the last dim, in float32: reverse = KL(p || q), forward = KL(q || p), p from `logits`."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    lq = torch.log_softmax(ref_logits.float(), dim=-1)
    if direction == "reverse":
        return (lp.exp() * (lp - lq)).sum(-1)
    return (lq.exp() * (lq - lp)).sum(-1)


class KLToReference(Strategy):
    """Penalise the instruction stage's drift from the model it starts from."""

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        self.reference: torch.nn.Module | None = None
        self.last: dict[str, torch.Tensor] = {}

    def check(self, stage_cfg: DictConfig) -> None:
        p = self.cfg
        for key in ("beta", "first_beta"):
            if p.get(key) is not None and not float(p[key]) >= 0.0:
                raise ValueError(f"preserve.{key}={p[key]}: must be >= 0")
        if int(p.first_tokens) < 0:
            raise ValueError(f"preserve.first_tokens={p.first_tokens}: must be >= 0")
        if int(p.first_tokens) > 0 and p.get("first_beta") is None:
            raise ValueError("preserve.first_tokens > 0 needs preserve.first_beta (the coefficient on those tokens)")
        if p.direction not in DIRECTIONS:
            raise ValueError(f"preserve.direction={p.direction!r}: expected one of {', '.join(DIRECTIONS)}")
        if str(stage_cfg.trainer.strategy) == "fsdp":
            raise ValueError("preserve=kl keeps a full reference copy on every device; it does not support trainer.strategy=fsdp")
        if p.get("reference"):
            from midtrain.models.build import finished_stage_hf

            finished_stage_hf(p.reference)

    def prepare_model(self, model: torch.nn.Module, stage_cfg: DictConfig) -> torch.nn.Module:
        if self.cfg.get("reference"):
            from transformers import AutoModelForCausalLM

            from midtrain.models.build import finished_stage_hf

            ref = AutoModelForCausalLM.from_pretrained(
                str(finished_stage_hf(self.cfg.reference)), dtype=model.dtype,
                attn_implementation=model.config._attn_implementation,
            )
        else:
            ref = copy.deepcopy(model)  # the weights the stage starts from
        ref.requires_grad_(False)
        ref.eval()
        self.reference = ref
        return model

    def on_fit_start(self, module: Any) -> None:
        assert self.reference is not None, "prepare_model was not called"
        dtype = next(module.model.parameters()).dtype
        self.reference.to(device=module.device, dtype=dtype)

    def coefficients(self, mask: torch.Tensor) -> torch.Tensor:
        """beta_t for every position of `mask` (labelled next-token positions)."""
        beta = torch.full(mask.shape, float(self.cfg.beta), device=mask.device)
        k = int(self.cfg.first_tokens)
        if k > 0:
            first = (answer_positions(mask) >= 1) & (answer_positions(mask) <= k)
            beta = torch.where(first, torch.full_like(beta, float(self.cfg.first_beta)), beta)
        return beta

    def penalty(self, batch: dict[str, torch.Tensor], logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum_t beta_t KL_t / labelled tokens, mean KL_t) for one batch and the trained model's logits."""
        assert self.reference is not None, "prepare_model was not called"
        mask = batch["labels"][:, 1:] != IGNORE_INDEX  # position t predicts label t+1
        with torch.no_grad():
            ref_logits = self.reference(
                input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
            ).logits
        kl = token_kl(logits[:, :-1][mask], ref_logits[:, :-1][mask], str(self.cfg.direction))
        n = mask.sum().clamp(min=1)
        return (self.coefficients(mask)[mask] * kl).sum() / n, kl.detach().sum() / n

    def loss(self, batch: dict[str, torch.Tensor], outputs: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        penalty, mean_kl = self.penalty(batch, outputs.logits)
        self.last = {"sft_loss": outputs.loss.detach(), "kl": mean_kl}
        return outputs.loss + penalty, {"train/sft_loss": self.last["sft_loss"], "train/kl": mean_kl}

    def record(self) -> dict:
        out = super().record()
        if self.last:
            out["final_kl"] = round(float(self.last["kl"]), 6)
            out["final_sft_loss"] = round(float(self.last["sft_loss"]), 6)
        return out
