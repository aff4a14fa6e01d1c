"""Loss values and gradients on small hand-made cases."""

from __future__ import annotations

import inspect
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from seglab.config import LossConfig
from seglab.errors import ConfigError
from seglab.loss_options import option_fields
from seglab.losses import (
    CrossEntropy,
    DiceLoss,
    FocalLoss,
    GeneralizedDiceLoss,
    LossOptions,
    LovaszSoftmaxLoss,
    MainAuxLoss,
    OhemCrossEntropy,
    WeightedSum,
    build_loss,
    build_single_loss,
    loss_names,
    register_loss,
    unregister_loss,
)

IGNORE = 255
ALL_LOSSES = {
    "ce": lambda: CrossEntropy(ignore_index=IGNORE),
    "ohem": lambda: OhemCrossEntropy(ignore_index=IGNORE, thresh=0.7, min_fraction=0.25),
    "focal": lambda: FocalLoss(gamma=2.0, ignore_index=IGNORE),
    "dice": lambda: DiceLoss(ignore_index=IGNORE),
    "generalized_dice": lambda: GeneralizedDiceLoss(ignore_index=IGNORE),
    "lovasz": lambda: LovaszSoftmaxLoss(ignore_index=IGNORE),
}


def _perfect_logits(target: torch.Tensor, num_classes: int, margin: float = 30.0) -> torch.Tensor:
    onehot = torch.nn.functional.one_hot(target.clamp(max=num_classes - 1), num_classes)
    return (onehot.permute(0, 3, 1, 2).double() * 2 - 1) * margin


def _case(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 3, (2, 5, 6), generator=gen)
    target[0, 0, :3] = IGNORE
    target[1, 4, 4] = IGNORE
    logits = torch.randn(2, 3, 5, 6, generator=gen, dtype=torch.float64)
    return logits, target


@pytest.mark.parametrize("name", list(ALL_LOSSES))
def test_perfect_prediction_gives_about_zero(name: str) -> None:
    _, target = _case()
    loss = ALL_LOSSES[name]()(_perfect_logits(target, 3), target)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", list(ALL_LOSSES))
def test_ignored_pixels_contribute_nothing(name: str) -> None:
    logits, target = _case()
    logits.requires_grad_(True)
    loss = ALL_LOSSES[name]()(logits, target)
    loss.backward()
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    assert torch.all(logits.grad[ignored] == 0)
    assert torch.any(logits.grad[~ignored] != 0)
    # Changing the logits at ignored pixels does not change the loss.
    changed = logits.detach().clone()
    changed[ignored] = 100.0
    assert float(ALL_LOSSES[name]()(changed, target)) == pytest.approx(loss.item())


@pytest.mark.parametrize("name", list(ALL_LOSSES))
def test_all_ignored_batch_gives_zero_not_nan(name: str) -> None:
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = ALL_LOSSES[name]()(logits, torch.full((1, 2, 2), IGNORE))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(logits.grad == 0)


@pytest.mark.parametrize("name", list(ALL_LOSSES))
def test_gradients_match_finite_differences(name: str) -> None:
    logits, target = _case(3)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: ALL_LOSSES[name]()(x, target), (logits,))


def test_cross_entropy_hand_values() -> None:
    # One pixel, two classes, logits (0, ln 3): p = (1/4, 3/4).
    logits = torch.tensor([0.0, math.log(3)]).view(1, 2, 1, 1)
    target = torch.tensor([[[1]]])
    assert float(CrossEntropy()(logits, target)) == pytest.approx(-math.log(0.75))
    # Smoothing 0.2 over 2 classes: target distribution (0.1, 0.9).
    smoothed = CrossEntropy(label_smoothing=0.2)(logits, target)
    assert float(smoothed) == pytest.approx(-(0.1 * math.log(0.25) + 0.9 * math.log(0.75)))
    # Two pixels, class weights (1, 3): weighted mean over the pixels' weights.
    logits2 = torch.tensor([[0.0, 0.0], [math.log(3), math.log(3)]]).view(1, 2, 1, 2)
    target2 = torch.tensor([[[0, 1]]])
    weighted = CrossEntropy(weight=torch.tensor([1.0, 3.0]))(logits2, target2)
    expected = (1 * -math.log(0.25) + 3 * -math.log(0.75)) / 4
    assert float(weighted) == pytest.approx(expected)


def test_focal_hand_values() -> None:
    logits = torch.tensor([0.0, math.log(4)]).view(1, 2, 1, 1)  # p = (0.2, 0.8)
    target = torch.tensor([[[1]]])
    expected = -(0.2**2) * math.log(0.8)
    assert float(FocalLoss(gamma=2.0)(logits, target)) == pytest.approx(expected)
    # One pixel: the weighted mean divides alpha_t out again; the plain mean keeps it.
    per_class = FocalLoss(gamma=2.0, alpha=[0.25, 0.75])(logits, target)
    assert float(per_class) == pytest.approx(expected)
    plain = FocalLoss(gamma=2.0, alpha=[0.25, 0.75], reduction="mean")(logits, target)
    assert float(plain) == pytest.approx(0.75 * expected)
    assert float(FocalLoss(gamma=2.0, alpha=0.25)(logits, target)) == pytest.approx(0.25 * expected)
    assert float(FocalLoss(gamma=0.0)(logits, target)) == pytest.approx(-math.log(0.8))
    # gamma = 0, no alpha is exactly cross-entropy.
    x, t = _case(1)
    torch.testing.assert_close(FocalLoss(gamma=0.0)(x, t), CrossEntropy()(x, t))
    # Focusing: an easy pixel loses much more than a hard one relative to CE.
    easy = torch.tensor([0.0, 4.0]).view(1, 2, 1, 1)
    assert float(FocalLoss()(easy, target)) < 0.01 * float(CrossEntropy()(easy, target))


def test_dice_hand_values() -> None:
    # p = 0.5 everywhere, truth (0, 1): per-class Dice = 2*0.5 / (1 + 1) = 0.5 -> loss 0.5.
    logits = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    assert float(DiceLoss(smooth=0.0)(logits, target)) == pytest.approx(0.5)
    # Confident and wrong: Dice 0 -> loss 1.
    wrong = _perfect_logits(torch.tensor([[[1, 0]]]), 2)
    assert float(DiceLoss(smooth=0.0)(wrong, target)) == pytest.approx(1.0, abs=1e-6)


def test_generalized_dice_hand_values() -> None:
    # Three pixels: truth (0, 0, 1); p = 0.5 everywhere.
    # w0 = 1/4, w1 = 1; numerator 2*(1/4*1 + 1*0.5) = 1.5; denominator 1/4*(1.5+2) + 1*(1.5+1).
    logits = torch.zeros(1, 2, 1, 3)
    target = torch.tensor([[[0, 0, 1]]])
    expected = 1 - 1.5 / (0.25 * 3.5 + 2.5)
    assert float(GeneralizedDiceLoss(eps=0.0)(logits, target)) == pytest.approx(expected)


def test_lovasz_equals_jaccard_loss_on_hard_predictions() -> None:
    # With (nearly) hard probabilities the Lovasz extension equals 1 - IoU per present class.
    pred = torch.tensor([[[0, 0, 1, 1], [2, 2, 2, 0]]])
    target = torch.tensor([[[0, 1, 1, 1], [2, 2, 0, IGNORE]]])
    logits = _perfect_logits(pred, 3)
    ious = []
    for c in range(3):
        valid = target != IGNORE
        p, t = (pred == c) & valid, (target == c) & valid
        ious.append(float((p & t).sum()) / float((p | t).sum()))
    expected = 1 - sum(ious) / 3
    assert float(LovaszSoftmaxLoss()(logits, target)) == pytest.approx(expected, abs=1e-6)


def test_weighted_sum_fixed() -> None:
    x, t = _case(2)
    combo = WeightedSum(CrossEntropy(), DiceLoss(), weights=(0.7, 0.3))
    expected = 0.7 * CrossEntropy()(x, t) + 0.3 * DiceLoss()(x, t)
    torch.testing.assert_close(combo(x, t), expected)


def test_focal_at_gamma_zero_is_weighted_cross_entropy() -> None:
    # Class weights, ignored pixels, a class absent from the batch: F.cross_entropy's
    # weighted mean (sum w_t * ce / sum w_t) is the reference.
    x, t = _case(7)
    t[0, 1, :] = 1
    weights = torch.tensor([0.5, 2.0, 3.5], dtype=torch.float64)
    focal = FocalLoss(gamma=0.0, alpha=weights, ignore_index=IGNORE)(x, t)
    reference = torch.nn.functional.cross_entropy(x, t, weight=weights, ignore_index=IGNORE)
    torch.testing.assert_close(focal, reference)
    torch.testing.assert_close(focal, CrossEntropy(weight=weights)(x, t).double())
    # build_loss gives focal the class weights as alpha: the same equality through a recipe.
    built = build_loss({"name": "focal", "focal_gamma": 0.0}, class_weights=weights)
    torch.testing.assert_close(built(x, t).double(), reference, rtol=1e-6, atol=1e-6)
    # The plain mean differs by sum(w_t) / n_valid.
    valid = t != IGNORE
    plain = FocalLoss(gamma=0.0, alpha=weights, reduction="mean")(x, t)
    scale = weights[t[valid]].sum() / valid.sum()
    torch.testing.assert_close(plain, reference * scale)
    with pytest.raises(ValueError, match="focal reduction"):
        FocalLoss(reduction="sum")


def test_main_aux_loss() -> None:
    x, t = _case(4)
    aux = x.flip(1)
    loss = MainAuxLoss(CrossEntropy(), aux_weight=0.4)
    expected = CrossEntropy()(x, t) + 0.4 * CrossEntropy()(aux, t)
    torch.testing.assert_close(loss({"out": x, "aux": aux}, t), expected)
    torch.testing.assert_close(loss({"out": x}, t), CrossEntropy()(x, t))
    torch.testing.assert_close(loss(x, t), CrossEntropy()(x, t))


def test_build_loss_from_mapping() -> None:
    x, t = _case(5)
    weights = torch.tensor([1.0, 2.0, 0.5])
    ce = build_loss({"name": "ce", "label_smoothing": 0.1}, class_weights=weights)
    torch.testing.assert_close(ce(x, t), CrossEntropy(weights, label_smoothing=0.1)(x, t))
    combo = build_loss({"name": "ce", "second": "lovasz", "weights": [1.0, 0.5]})
    assert isinstance(combo, WeightedSum)
    expected = CrossEntropy()(x, t) + 0.5 * LovaszSoftmaxLoss()(x, t)
    torch.testing.assert_close(combo(x, t), expected)
    with pytest.raises(ConfigError, match="unknown loss 'hinge'"):
        build_loss({"name": "hinge"})


def test_bfloat16_logits_are_scored_in_float32() -> None:
    x, t = _case(6)
    loss = CrossEntropy()(x.bfloat16(), t)
    assert loss.dtype == torch.float32


def test_ohem_keeps_hard_pixels_or_the_hardest_share() -> None:
    x, t = _case(7)
    weights = torch.tensor([1.0, 2.0, 0.5])
    # Every pixel counts when all are "hard" (thresh 1) or the kept share is 1: plain CE.
    for thresh, share in ((1.0, 0.1), (0.5, 1.0)):
        for w in (None, weights):
            torch.testing.assert_close(
                OhemCrossEntropy(w, IGNORE, thresh, share)(x, t), CrossEntropy(w, IGNORE)(x, t)
            )
    valid = t != IGNORE
    nll = torch.nn.functional.cross_entropy(x, t, ignore_index=IGNORE, reduction="none")[valid]
    # No pixel below p = 1e-12: the hardest ceil(share * valid) pixels only.
    keep = math.ceil(0.3 * int(valid.sum()))
    expected = nll.sort(descending=True).values[:keep].mean()
    torch.testing.assert_close(OhemCrossEntropy(None, IGNORE, 1e-12, 0.3)(x, t), expected)
    # thresh 0.7: the pixels with p < 0.7 (more than the 1% floor).
    hard = nll[nll >= -math.log(0.7)]
    assert 0 < hard.numel() < nll.numel()
    torch.testing.assert_close(OhemCrossEntropy(None, IGNORE, 0.7, 0.01)(x, t), hard.mean())


def test_ohem_from_recipe_and_bad_values() -> None:
    x, t = _case(8)
    cfg = LossConfig(name="ohem", ohem_thresh=0.6, ohem_min_fraction=0.2)
    torch.testing.assert_close(build_loss(cfg)(x, t), OhemCrossEntropy(None, 255, 0.6, 0.2)(x, t))
    with pytest.raises(ValueError, match="ohem_thresh"):
        LossConfig(name="ohem", ohem_thresh=0.0)
    with pytest.raises(ValueError, match="must lie in"):
        OhemCrossEntropy(thresh=0.7, min_fraction=1.5)


# --- the registry: names, options models, the recipe's loss section ----------------------------


def test_builtin_losses_register_in_their_listed_order() -> None:
    assert loss_names() == ("ce", "ohem", "focal", "dice", "generalized_dice", "lovasz")
    assert list(option_fields()) == ["label_smoothing", "ohem_thresh", "ohem_min_fraction",
                                     "focal_gamma", "focal_alpha", "focal_reduction", "dice_smooth"]
    with pytest.raises(ConfigError, match="unknown loss 'hinge'; choose one of ce, ohem, focal"):
        build_single_loss("hinge", {})


def test_every_declared_loss_has_a_builder() -> None:
    for name in loss_names():
        assert isinstance(build_single_loss(name, {}), nn.Module)


def test_a_recipe_s_loss_section_is_validated_without_torch() -> None:
    # A typo in a recipe is reported before torch loads (seconds on a busy machine), so every
    # built-in loss is declared in seglab.loss_options, not only where its builder registers.
    code = ("import sys; from seglab.config import Recipe; from seglab import loss_options; "
            "Recipe.from_dict({'data': {'spec': 'folder:/d'}, 'model': {'name': 'unet'}, "
            "'loss': {'name': 'focal', 'second': 'lovasz', 'focal_gamma': 3}}); "
            "assert 'torch' not in sys.modules, 'torch loaded'; light = loss_options.loss_names(); "
            "import seglab.losses; assert loss_options.loss_names() == light, 'not declared'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_config_spells_no_loss_option() -> None:
    # The options live in their loss's module; config.py only binds the registry's checks.
    source = Path(inspect.getsourcefile(LossConfig)).read_text(encoding="utf-8")
    assert not [key for key in option_fields() if key in source]
    assert "lovasz" not in source and "LossName" not in source


def test_a_name_or_an_option_registered_twice_is_refused() -> None:
    class Options(LossOptions):
        focal_gamma: float = 1.0

    def build(options: LossOptions, *, ignore_index: int, class_weights: object) -> nn.Module:
        return CrossEntropy(ignore_index=ignore_index)

    with pytest.raises(ConfigError, match="loss name 'dice' is registered twice"):
        register_loss("dice")(build)
    with pytest.raises(ConfigError, match="focal_gamma already belongs to loss 'focal'"):
        register_loss("twin", options=Options)(build)
    assert "twin" not in loss_names()


def test_an_option_shadowing_a_section_field_is_refused() -> None:
    class Options(LossOptions):
        aux_weight: float = 1.0

    register_loss("shadow", options=Options)(lambda options, **_: CrossEntropy())
    try:
        with pytest.raises(ConfigError, match="option aux_weight, a field of the loss section"):
            LossConfig(name="shadow")
    finally:
        unregister_loss("shadow")
    assert LossConfig().aux_weight == 0.4


def test_options_are_checked_when_assigned_and_saved_in_the_section_s_order() -> None:
    cfg = LossConfig(name="focal", focal_gamma=3)
    cfg.focal_gamma = 1
    assert build_loss(cfg).gamma == 1.0
    with pytest.raises(ValueError, match="focal_gamma"):
        cfg.focal_gamma = -1
    with pytest.raises(ValueError, match="focal_gama"):
        cfg.focal_gama = 1
    keys = list(cfg.model_dump())
    assert keys[keys.index("class_weight_params") + 1 :] == [*option_fields(), "aux_weight"]
    assert list(LossConfig.known_fields()) == keys
