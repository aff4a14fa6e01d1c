"""The torch model compiled with inductor freezing, used where it pays for its compile time.

``torch.compile`` with inductor freezing (weights folded into the graph as constants, oneDNN
weight prepacking) is the fastest CPU runtime for the torchvision models: at 360x480, batch 1
on the 2-core AMD EPYC (AVX-512 BF16), bf16 + compile with freezing ran 2.05x eager fp32 for
LR-ASPP-MobileNetV3 and 2.33x for DeepLabV3-ResNet50, against 1.10x and 1.86x for bf16 alone
(benchmarks/RESULTS.md). But compiling costs about 10 s per process and per input shape, so
it is a default only for a workload large enough to win that back.

:class:`CompiledModel` decides at its first batch, which it answers eagerly and times: it
compiles when the images still to come, at a conservative 20% saving per image, would save
more than :data:`COMPILE_SETUP_S`; then it keeps the compiled graph only if it is faster and
its mask is as faithful to the float32 model's as the eager model's at the same precision:
>= 99.9% of the pixels of that batch agree with fp32, or under bf16 autocast no more than 0.1
point below the eager bf16 model's own agreement (an untrained DeepLabV3-R50 agrees 98.98% in
eager bf16, 99.05% compiled).
Later batches of another shape (a last, smaller batch; images of another size) run eagerly:
each new shape would cost a full compile again.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn

from seglab.export import MIN_AGREEMENT, parity

# Seconds one compile is assumed to cost: measured 8-15 s for LR-ASPP and DeepLabV3-R50 at
# 360x480 on the 2-core box (a second process takes as long: freezing bypasses the cache).
COMPILE_SETUP_S = 15.0
# The smallest saving per pass measured for compile + freezing over the same-precision eager
# model (DeepLabV3-R50 bf16 0.80x the time, LR-ASPP 0.54x): what the estimate counts on.
COMPILE_GAIN = 0.2
AGREEMENT_SLACK = 0.001  # how far below the eager model's own fp32 agreement compile may be


def _freezing() -> Any:
    """Inductor's freezing, on only while the compiled model runs (it compiles lazily)."""
    # lazy: inductor's config takes 3.7 s to import (loaded 2-core CPU); only a compile needs it
    import torch._inductor.config as inductor

    return inductor.patch(freezing=True)


class CompiledModel(nn.Module):
    """``model`` behind ``torch.compile`` with freezing, once a first batch shows it pays.

    Args:
        model: the eval-mode torch model (``model(x) -> {"out": logits, ...}``).
        workload: images still to answer (None: unknown, so never compiled unless ``force``).
        force: compile at the first batch whatever the workload (``backend="compile"``);
            the agreement check still applies.

    :attr:`decision` is ``"undecided"``, ``"compiled"`` or ``"eager"``; :attr:`reason`
    says why.
    """

    def __init__(self, model: nn.Module, workload: int | None = None, force: bool = False):
        super().__init__()
        self.eager = model
        self.workload = workload
        self.force = force
        self.decision = "undecided"
        self.reason = "decided at the first batch"
        self._compiled: Any = None
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: Tensor) -> Any:
        if self.decision == "undecided":
            return self._decide(x)
        if self.decision == "compiled" and tuple(x.shape) == self._shape:
            with _freezing():
                return self._compiled(x)
        return self.eager(x)

    def _decide(self, x: Tensor) -> Any:
        start = time.perf_counter()
        answer = self.eager(x)
        first_s = time.perf_counter() - start  # picks kernels too: an upper bound on a pass
        if self.workload is None and not self.force:
            self._settle("eager", "not compiled: no workload announced (Predictor.expect)")
            return answer
        eager_s = first_s
        if self.force or self._saving(x, first_s) >= COMPILE_SETUP_S:
            eager_s = _fastest(lambda: self.eager(x))
        saving = self._saving(x, eager_s)
        if saving < COMPILE_SETUP_S and not self.force:
            self._settle("eager", f"not compiled: {self.workload} images at "
                         f"{eager_s * 1000:.0f} ms a pass would save ~{saving:.0f} s, "
                         f"compiling costs ~{COMPILE_SETUP_S:.0f} s")
            return answer
        self._compiled = torch.compile(self.eager, dynamic=False)
        start = time.perf_counter()
        with _freezing():
            compiled_answer = self._compiled(x)
        setup_s = time.perf_counter() - start
        with _freezing():
            compiled_s = _fastest(lambda: self._compiled(x))
        agreement, required = self._faithfulness(x, answer, compiled_answer)
        if agreement < required:
            self._settle("eager", f"compiled graph disagrees with the fp32 model "
                         f"({agreement:.2%} of pixels agree, {required:.2%} needed): not used")
        elif compiled_s >= eager_s:
            self._settle("eager", f"compiled {compiled_s * 1000:.0f} ms a pass, not faster "
                         f"than eager {eager_s * 1000:.0f} ms: not used")
        else:
            self._shape = tuple(x.shape)
            self._settle("compiled", f"compiled with freezing in {setup_s:.0f} s: "
                         f"{compiled_s * 1000:.0f} ms a pass vs eager {eager_s * 1000:.0f} ms, "
                         f"{agreement:.2%} agreement with fp32")
        return answer

    def _faithfulness(self, x: Tensor, eager: Any, compiled: Any) -> tuple[float, float]:
        """The compiled mask's agreement with fp32, and the agreement it needs (see above)."""
        if not torch.is_autocast_enabled(x.device.type):
            return _agreement(eager, compiled), MIN_AGREEMENT
        with torch.autocast(x.device.type, enabled=False):
            reference = self.eager(x)
        own = _agreement(reference, eager)
        return _agreement(reference, compiled), min(MIN_AGREEMENT, own - AGREEMENT_SLACK)

    def _saving(self, x: Tensor, pass_s: float) -> float:
        """Seconds a compile is expected to save over the announced workload."""
        return (self.workload or 0) / x.shape[0] * pass_s * COMPILE_GAIN

    def _settle(self, decision: str, reason: str) -> None:
        self.decision, self.reason = decision, reason
        if decision == "eager":
            self._compiled = None  # drop the graph and its frozen weights


def _fastest(call: Any, repeats: int = 2) -> float:
    """Seconds of the fastest of ``repeats`` calls (one slow pass on a busy machine misleads)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def _agreement(reference: Any, other: Any) -> float:
    return parity(reference["out"], other["out"])["argmax_agreement"]
