"""Paired comparison of models scored on the same images: is a difference in mIoU real?

Both models are resampled with the *same* bootstrap draws of images, so what the images have
in common (an easy or a hard test image helps or hurts both) cancels: the interval is the one
of the difference ``A - B``. The two-sided bootstrap p-value is twice the share of resampled
differences on the far side of zero. As a check, a paired permutation test swaps the two
models' counts on a random half of the images (the null hypothesis: which model produced an
image's prediction does not matter) and counts how often the difference is as large as seen.
No correction for multiple comparisons is made; the report says so.

A difference can be real and still too small to matter: two exports of one network (PyTorch
and ONNX Runtime) flip a few hundred pixels and differ by a few thousandths of a point, with an
interval that excludes zero. Such a pair is "negligible" (its observed difference is below
:data:`DEFAULT_MARGIN`, a tenth of a point, which the tables cannot show) and is ranked as
equal, not as one model beating the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from seglab.bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    check_level,
    percentile_interval,
    resample_indices,
    resample_weights,
    scores_from_totals,
)
from seglab.errors import DataError
from seglab.metrics import MIOU
from seglab.per_image import PerImageCounts

METRIC = MIOU
DEFAULT_MARGIN = 0.001  # 0.1 mIoU points: the smallest difference the tables print


def _aligned(a: PerImageCounts, b: PerImageCounts, names: tuple[str, str]) -> PerImageCounts:
    """``b`` in ``a``'s image order; an error unless both scored the same images and classes."""
    if a.names != b.names:
        raise DataError(f"{names[0]} and {names[1]} were scored with different classes")
    if a.images == b.images:
        return b
    if sorted(a.images) != sorted(b.images) or len(set(a.images)) != len(a.images):
        raise DataError(
            f"{names[0]} ({a.num_images} images) and {names[1]} ({b.num_images} images) were "
            "not scored on the same images: a paired comparison needs one split"
        )
    where = {image: i for i, image in enumerate(b.images)}
    return b.select(np.array([where[image] for image in a.images]))


def _miou(tp: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return scores_from_totals(tp, truth, pred)[METRIC]


@dataclass
class PairedResult:
    """``a - b`` in mIoU with its paired-bootstrap interval and two p-values."""

    a: str
    b: str
    difference: float
    interval: tuple[float, float]
    p_bootstrap: float
    p_permutation: float
    level: float
    resamples: int = DEFAULT_RESAMPLES
    margin: float = DEFAULT_MARGIN

    @property
    def excludes_zero(self) -> bool:
        """The interval lies on one side of zero."""
        return self.interval[0] > 0 or self.interval[1] < 0

    @property
    def significant(self) -> bool:
        """The interval excludes zero and the difference is at least :attr:`margin`."""
        return self.excludes_zero and abs(self.difference) >= self.margin

    @property
    def verdict(self) -> str:
        """``significant``, ``negligible`` (real but below the margin) or ``not significant``."""
        if self.significant:
            return "significant"
        return "negligible" if self.excludes_zero else "not significant"

    def text(self) -> str:
        """``A - B = +0.8 [-0.6, +2.1] mIoU points, not significant (p = 0.31)``."""
        lo, hi = self.interval
        verdict = self.verdict
        if verdict == "negligible":
            verdict = (f"real but negligible ({100 * self.difference:+.2g} points, under "
                       f"{100 * self.margin:.1f}): counted as equal")
        return (f"{self.a} - {self.b} = {100 * self.difference:+.1f} [{100 * lo:+.1f}, "
                f"{100 * hi:+.1f}] mIoU points, {verdict} ({self.p_text()})")

    def p_text(self) -> str:
        """``p = 0.31``; ``p < 0.001`` when no resample crossed zero (the resolution)."""
        if self.p_bootstrap == 0:
            return f"p < {1 / self.resamples:.2g}"
        return f"p = {self.p_bootstrap:.3g}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "metric": METRIC, "difference": self.difference,
            "interval": list(self.interval), "level": self.level,
            "p_bootstrap": self.p_bootstrap, "p_permutation": self.p_permutation,
            "margin": self.margin, "significant": self.significant, "verdict": self.verdict,
            "text": self.text(),
        }


def paired_difference(
    a: PerImageCounts,
    b: PerImageCounts,
    names: tuple[str, str] = ("A", "B"),
    *,
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    permutations: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    margin: float = DEFAULT_MARGIN,
) -> PairedResult:
    """mIoU(a) - mIoU(b) on the same images, with interval and p-values (module docstring)."""
    level = check_level(level)
    b = _aligned(a, b, names)
    n = a.num_images
    A = [x.astype(np.float64) for x in (a.tp, a.truth, a.pred)]
    B = [x.astype(np.float64) for x in (b.tp, b.truth, b.pred)]
    observed = float(_miou(*(x.sum(0) for x in A)) - _miou(*(x.sum(0) for x in B)))

    weights = resample_weights(resample_indices(n, resamples, seed), n)
    diffs = _miou(*(weights @ x for x in A)) - _miou(*(weights @ x for x in B))
    low, high = percentile_interval(diffs, level)
    p_boot = min(1.0, 2.0 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)))

    # Sign-flip permutations: image i keeps its pair (S=0) or swaps it (S=1).
    swap = np.random.default_rng(seed + 1).integers(0, 2, size=(permutations, n)).astype(float)
    a_perm = [bx.sum(0) + swap @ (ax - bx) for ax, bx in zip(A, B, strict=True)]
    b_perm = [ax.sum(0) + bx.sum(0) - ap for ax, bx, ap in zip(A, B, a_perm, strict=True)]
    perm = _miou(*a_perm) - _miou(*b_perm)
    tolerance = 1e-12  # a permuted difference equal to the observed one counts as extreme
    p_perm = float((1 + np.sum(np.abs(perm) >= abs(observed) - tolerance)) / (permutations + 1))
    return PairedResult(names[0], names[1], observed, (float(low), float(high)),
                        float(p_boot), p_perm, level, resamples, margin)


def rank_groups(scores: dict[str, float], pairs: list[PairedResult]) -> list[list[str]]:
    """Models in order of mIoU, grouped: a model joins the group of the best model above it
    unless it is significantly worse than that group's leader (by at least the margin), else
    it starts a new group."""
    verdict = {(p.a, p.b): p.significant for p in pairs}
    verdict.update({(p.b, p.a): p.significant for p in pairs})
    groups: list[list[str]] = []
    for label in sorted(scores, key=lambda k: -scores[k]):
        if groups and not verdict.get((groups[-1][0], label), True):
            groups[-1].append(label)
        else:
            groups.append([label])
    return groups


def significance_table(
    counts: dict[str, PerImageCounts],
    *,
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    margin: float = DEFAULT_MARGIN,
) -> dict[str, Any]:
    """Every pair of models (better first), the ranking groups, and how they were found."""
    point = {label: float(_miou(c.tp.sum(0), c.truth.sum(0), c.pred.sum(0)))
             for label, c in counts.items()}
    order = sorted(point, key=lambda k: -point[k])
    pairs = [
        paired_difference(counts[x], counts[y], (x, y), level=level, resamples=resamples,
                          permutations=resamples, seed=seed, margin=margin)
        for i, x in enumerate(order) for y in order[i + 1:]
    ]
    groups = rank_groups(point, pairs)
    return {
        "metric": METRIC,
        "level": level,
        "resamples": resamples,
        "seed": seed,
        "margin": margin,
        "num_images": next(iter(counts.values())).num_images if counts else 0,
        "pairs": [p.to_dict() for p in pairs],
        "groups": groups,
        "ranking": " > ".join("{" + ", ".join(g) + "}" if len(g) > 1 else g[0] for g in groups),
        "method": (
            f"Paired percentile bootstrap over the test images ({resamples} resamples, seed "
            f"{seed}, {int(round(100 * level))}% intervals; same draws for both models), "
            f"two-sided p-value; a sign-flip permutation test ({resamples} permutations) as a "
            f"check. A difference below {100 * margin:.1f} mIoU points is negligible even "
            "where its interval excludes zero. No multiple-comparison correction. Groups: a "
            "model joins the group above unless significantly worse than its leader."
        ),
    }
