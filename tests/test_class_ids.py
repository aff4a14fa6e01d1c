"""class_ids answers exactly what argmax does, ties and NaN included."""

from __future__ import annotations

import pytest
import torch

from seglab.class_ids import class_ids


@pytest.mark.parametrize(("shape", "dim"), [((11, 36, 48), 0), ((3, 5, 17, 23), 1),
                                            ((2, 300, 6, 7), 1)])
def test_class_ids_equal_argmax_with_ties_and_nan(shape, dim):
    generator = torch.Generator().manual_seed(0)
    tied = torch.randint(0, 3, shape, generator=generator).float()  # many ties
    with_nan = torch.randn(shape, generator=generator)
    with_nan.view(-1)[::97] = float("nan")
    for scores in (tied, with_nan, tied.to(torch.bfloat16)):
        assert torch.equal(class_ids(scores, dim), scores.argmax(dim))
        if scores.ndim == 4:
            nhwc = scores.contiguous(memory_format=torch.channels_last)
            assert torch.equal(class_ids(nhwc, dim), scores.argmax(dim))
