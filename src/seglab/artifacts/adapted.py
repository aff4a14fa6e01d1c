"""A model from elsewhere, called like a seglab model: RGB input in, ``{"out": logits}`` out."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from seglab.artifacts.runtimes import first_tensor


class AdaptedModule(nn.Module):
    """``module`` taking seglab's normalised RGB batch and answering ``{"out": logits}``.

    ``reverse_channels`` hands the module BGR (the normalisation was already applied in RGB
    order with the per-channel values reversed, so each channel gets its own statistics).
    The module may return a tensor, a dict with ``"out"`` or a tuple whose first item is the
    logits. ``seglab_spec`` is the wrapped module's, when it has one.
    """

    def __init__(self, module: nn.Module, reverse_channels: bool = False,
                 source: Any = "model") -> None:
        super().__init__()
        self.module = module
        self.reverse_channels = reverse_channels
        self.source = str(source)
        spec = getattr(module, "seglab_spec", None)
        if isinstance(spec, dict):
            self.seglab_spec = spec

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if self.reverse_channels:
            x = x.flip(1)
        return {"out": first_tensor(self.module(x), self.source)}


def inner_module(model: Any) -> Any:
    """The model inside an :class:`AdaptedModule` (anything else is returned as it is)."""
    return model.module if isinstance(model, AdaptedModule) else model
