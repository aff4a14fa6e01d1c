"""One fp32 training pass of a convolution layer, for comparing a speed-up with the plain layer."""

from __future__ import annotations

import torch
from torch import nn


def train_pass(conv: nn.Module, x: torch.Tensor):
    """Output, input gradient, weight and bias gradients of one fp32 training pass (the output
    gradient is the same random tensor on every call)."""
    conv.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    out = conv(x)
    torch.manual_seed(2)
    out.backward(torch.randn(out.shape))
    bias = conv.bias.grad if conv.bias is not None else torch.zeros(())
    return out.detach(), x.grad, conv.weight.grad, bias
