"""Segmentation losses: every one takes ``(logits [N,C,H,W], target [N,H,W])`` and skips
pixels whose target is the ignore index.

One module per family registers its losses' builders (``@register_loss``, :mod:`.registry`);
the names and typed options models recipes are validated with are in the torch-free
:mod:`seglab.loss_options`. This face imports every family, so importing any
``seglab.losses`` module registers them all:

- ``ce`` :class:`CrossEntropy` (class weights, label smoothing), ``ohem``
  :class:`OhemCrossEntropy` (the hardest pixels only): :mod:`.cross_entropy`;
- ``focal`` :class:`FocalLoss` (gamma, alpha): :mod:`.focal`;
- ``dice`` :class:`DiceLoss` (soft Dice), ``generalized_dice`` :class:`GeneralizedDiceLoss`
  (Sudre et al. 2017): :mod:`.dice`;
- ``lovasz`` :class:`LovaszSoftmaxLoss` (Berman et al. 2018): :mod:`.lovasz`;
- :class:`WeightedSum` of two losses with fixed weights or the adaptive rule of the
  Cityscapes U-Net study (:func:`adaptive_update`), :class:`MainAuxLoss` over the model's
  ``"out"`` and, weighted, ``"aux"`` logits: :mod:`.combined`.

:func:`build_loss` builds any of them from a recipe's loss section.
"""

from __future__ import annotations

from seglab.loss_options import LossOptions, loss_names
from seglab.losses.build import build_loss, build_single_loss
from seglab.losses.combined import MainAuxLoss, WeightedSum, adaptive_update
from seglab.losses.cross_entropy import CrossEntropy, OhemCrossEntropy
from seglab.losses.dice import DiceLoss, GeneralizedDiceLoss
from seglab.losses.focal import FocalLoss
from seglab.losses.lovasz import LovaszSoftmaxLoss
from seglab.losses.registry import register_loss, unregister_loss

__all__ = [
    "CrossEntropy",
    "DiceLoss",
    "FocalLoss",
    "GeneralizedDiceLoss",
    "LossOptions",
    "LovaszSoftmaxLoss",
    "MainAuxLoss",
    "OhemCrossEntropy",
    "WeightedSum",
    "adaptive_update",
    "build_loss",
    "build_single_loss",
    "loss_names",
    "register_loss",
    "unregister_loss",
]
