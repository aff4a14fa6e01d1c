"""Segmentor: backbone -> head (+ aux head) -> logits upsampled to the input size."""

from __future__ import annotations

import torch
from torch import nn

from seglab.models.heads.common import resize_to


class Segmentor(nn.Module):
    """Compose a feature backbone, a head and an optional auxiliary head.

    The backbone returns a list of feature maps (shallow to deep). The head returns logits,
    or a dict with ``"out"`` and ``"aux"`` when it computes its own auxiliary prediction
    (OCR's soft object regions). ``aux`` switches the auxiliary output on or off;
    ``aux_weight`` is the loss weight the paper gives it (read by the training engine).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, aux_head: nn.Module | None = None,
                 *, aux: bool = False, aux_weight: float | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head if aux else None
        self.aux = aux
        self.aux_weight = aux_weight if aux else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)
        out = self.head(features)
        aux = None
        if isinstance(out, dict):
            out, aux = out["out"], out.get("aux")
        if self.aux_head is not None:
            aux = self.aux_head(features)
        result = {"out": resize_to(out, size)}
        if self.aux and aux is not None:
            result["aux"] = resize_to(aux, size)
        return result

    def stages(self) -> list[list[nn.Module]]:
        """The backbone's stages (the units of ``last:N`` freezing)."""
        return self.backbone.stages()
