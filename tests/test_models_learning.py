"""Heads learn: a few steps of Adam fit a small synthetic batch far above the majority class.

The contract tests check shapes and gradients; this catches heads that are wired wrongly
(e.g. attention over the wrong axis, skips misaligned) yet still produce the right shapes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seglab.models import build_model


def _scene(n: int = 4, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, size, size, generator=generator) * 0.1
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        r, c = torch.randint(8, size - 24, (2,), generator=generator).tolist()
        images[i, :, r:r + 20, c:c + 20] += 1.0  # a bright square: class 1
        masks[i, r:r + 20, c:c + 20] = 1
        images[i, 0, :, :10] -= 1.0  # a dark-red band on the left: class 2
        masks[i, :, :10] = 2
    return images, masks


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("unet", {"base_channels": 8}),
        ("lraspp_mobilenetv3_small", {}),
        ("ocrnet", {"backbone": "mobilenetv3_small_100", "output_stride": 16,
                    "head_channels": 64, "key_channels": 32}),
        ("pspnet_mobilenetv2", {"head_channels": 64}),
        ("deeplabv3plus_resnet18", {"head_channels": 32}),
    ],
)
def test_model_fits_a_small_batch(name, options):
    torch.manual_seed(0)
    images, masks = _scene()
    majority = masks.flatten().bincount().max().item() / masks.numel()
    model = build_model(name, 3, **options).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(40):
        outputs = model(images)
        loss = sum(F.cross_entropy(v, masks) for v in outputs.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # Judged on the last training forward pass: after 40 steps BatchNorm's running statistics
    # (momentum 0.1) still lag, so eval mode would measure them rather than the head.
    accuracy = (outputs["out"].argmax(1) == masks).float().mean().item()
    assert majority < 0.8
    assert accuracy > 0.9, f"{name}: pixel accuracy {accuracy:.3f} after 40 steps"
