"""Static measures of a network: parameters, weight bytes and GFLOPs (nothing is timed)."""

from __future__ import annotations

import copy
import io
from typing import Any

import torch
from safetensors.torch import save
from torch import nn

from seglab.models.profile import count_gmacs


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's state dict as seglab saves it (safetensors; torch.save fallback)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    try:
        return len(save(state))
    except (RuntimeError, ValueError):
        # safetensors refuses tensors that share storage; torch.save handles them.
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getbuffer().nbytes


def _meta_copy(model: nn.Module) -> nn.Module:
    """A structural copy of ``model`` with every tensor on the meta device (no data copied)."""
    memo: dict[int, Any] = {}
    for tensor in list(model.parameters()) + list(model.buffers()):
        meta = torch.empty_like(tensor, device="meta")
        if isinstance(tensor, nn.Parameter):
            meta = nn.Parameter(meta, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = meta
    return copy.deepcopy(model, memo).eval()


def count_gflops(model: nn.Module, input_size: tuple[int, int]) -> float | None:
    """Multiply-adds / 1e9 of one image, counted on a meta-device copy (no arithmetic).

    Returns None for models that cannot run on the meta device (then say so, don't guess).
    """
    try:
        return count_gmacs(_meta_copy(model), input_size)
    except (NotImplementedError, RuntimeError, TypeError):
        return None


def model_stats(model: nn.Module, input_size: tuple[int, int]) -> dict[str, Any]:
    """Parameters, trainable parameters, weight MB and GFLOPs (no timing)."""
    total, trainable = count_params(model)
    return {
        "params": total,
        "trainable_params": trainable,
        **_sizes(weight_bytes(model)),
        "heads": heads_counted(model),
        "gflops": count_gflops(model, input_size),
    }


def _sizes(nbytes: int) -> dict[str, float]:
    # The studies quote MB (10**6 bytes); file managers and torch tools often MiB (2**20).
    return {"weight_bytes": nbytes, "weight_mb": nbytes / 10**6, "weight_mib": nbytes / 2**20}


def heads_counted(model: nn.Module) -> str:
    """Which output heads the counts include (the aux head is trained, then often dropped)."""
    aux = getattr(model, "aux_weight", None) is not None or (
        getattr(model, "aux_classifier", None) is not None
    )
    return "out + aux" if aux else "out"
