"""The interface a preservation strategy of the instruction stage implements.

A strategy changes one or more of three things, each through one hook that the training
stage calls whatever the strategy is: the data (`extra_data`: documents added beside the
SFT samples), the model (`prepare_model`: e.g. LoRA adapters, a frozen reference copy) and
the loss (`loss`: e.g. a KL penalty). The base class changes nothing, which is `none`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    import torch

    from midtrain.data.packing import Segment


@dataclass
class ExtraData:
    """Segments a strategy adds to a stage's data.

    Attributes:
        segments: token ids and labels of the added pieces (e.g. documents with LM labels).
        place: None packs them into the same rows as the stage's own samples, shuffled
            together; otherwise they are packed into rows of their own, and `place(main,
            extra)` merges one epoch's permuted main row indices with the permuted extra
            row indices into that epoch's order.
        info: figures recorded in the stage's `metrics.json` under `train`.
    """

    segments: list["Segment"]
    place: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    info: dict = field(default_factory=dict)


class Strategy:
    """No preservation: the hooks leave data, model and loss as they are.

    Args:
        cfg: the `preserve` config node (its `name` picks the class from the registry).
    """

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.name = str(cfg.name)

    def check(self, stage_cfg: DictConfig) -> None:
        """Raise a clear error for a setting that cannot work, before any data or weights load."""

    def extra_data(self, stage_cfg: DictConfig, tokenizer: Any, segments: list["Segment"]) -> ExtraData | None:
        """Segments to train on beside the stage's own `segments` (None: nothing added)."""
        return None

    def prepare_model(self, model: "torch.nn.Module", stage_cfg: DictConfig) -> "torch.nn.Module":
        """The model the stage trains, given the one it starts from (called once, before compile)."""
        return model

    def on_fit_start(self, module: Any) -> None:
        """Called by the LightningModule once it is on its device and in its precision."""

    def loss(self, batch: dict[str, "torch.Tensor"], outputs: Any) -> tuple["torch.Tensor", dict[str, "torch.Tensor"]]:
        """The training loss from the model's outputs on `batch`, and extra values to log.

        `outputs` is the transformers output of the trained model with `labels` given
        (`.loss` is the mean next-token cross-entropy over labelled tokens, `.logits`).
        """
        return outputs.loss, {}

    def record(self) -> dict:
        """What `metrics.json` records under `preserve`: the name and the settings."""
        out = OmegaConf.to_container(self.cfg, resolve=True)
        assert isinstance(out, dict)
        out.pop("tag", None)
        return out
