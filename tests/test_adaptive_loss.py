"""The adaptive weighted loss against the Cityscapes U-Net study's rule, module and real runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from seglab.cli.main import app
from seglab.config import Recipe
from seglab.data.synthetic import make_synthetic
from seglab.engine import fit
from seglab.engine.callbacks import read_history
from seglab.errors import ConfigError
from seglab.losses import (
    CrossEntropy,
    GeneralizedDiceLoss,
    MainAuxLoss,
    WeightedSum,
    adaptive_update,
    build_loss,
)

TINY_UNET = {"name": "unet", "options": {"base_channels": 4, "depth": 2}}
TINY_AUX = {"name": "fcn", "options": {"backbone": "test_resnet", "aux": True, "head_channels": 8}}
NAMES = ("ce", "generalized_dice")


def study_oracle(losses: list[tuple[float, float]], alpha: float) -> list[tuple[float, float]]:
    """The study's code as the issue gives it, transcribed line by line: the weights after
    each update, fed the pairs of losses ``(l1, l2)`` in order."""
    w1 = w2 = None
    o1 = o2 = None
    out = []
    for l1, l2 in losses:
        if o1 is None:
            w1, w2 = 1 / l1, 1 / l2
            s = w1 + w2
            w1, w2 = w1 / s, w2 / s
        else:
            d1 = (o1 - l1) / (l1 + 1e-8)
            d2 = (o2 - l2) / (l2 + 1e-8)
            if d1 < 0 or d2 < 0:
                d1, d2 = abs(d1), abs(d2)
            else:
                d1, d2 = 1 / d1, 1 / d2
            s = d1 + d2
            d1, d2 = round(d1 / s, 3), round(d2 / s, 3)
            w1 = round((1 - alpha) * w1 + alpha * d1, 3)
            w2 = round((1 - alpha) * w2 + alpha * d2, 3)
            s = w1 + w2
            w1, w2 = w1 / s, w2 / s
        o1, o2 = l1, l2
        out.append((w1, w2))
    return out


# Epoch-mean (CE, generalized Dice) pairs shaped like a training run's, with its bumps:
# both falling, one rising (epochs 4 and 9), both rising (epoch 7).
RECORDED = [
    (2.3561, 0.9412),
    (1.8127, 0.9013),
    (1.5022, 0.8671),
    (1.3960, 0.8702),
    (1.2508, 0.8344),
    (1.1893, 0.8120),
    (1.2011, 0.8163),
    (1.0754, 0.7895),
    (1.0802, 0.7731),
    (0.9917, 0.7702),
    (0.9630, 0.7488),
    (0.9581, 0.7480),
]


def _scripted_sum(alpha: float) -> WeightedSum:
    return WeightedSum(CrossEntropy(), GeneralizedDiceLoss(), adaptive=True, alpha=alpha,
                       names=NAMES)


@pytest.mark.parametrize("alpha", [0.9, 0.5, 0.1, 1.0])
def test_rule_equals_the_study_code_on_a_recorded_sequence(alpha: float) -> None:
    combo = _scripted_sum(alpha)
    expected = study_oracle(RECORDED, alpha)
    for losses, (w1, w2) in zip(RECORDED, expected, strict=True):
        combo.update(losses)
        assert round(combo.weights[0], 3) == round(w1, 3)
        assert round(combo.weights[1], 3) == round(w2, 3)
        assert combo.weights == pytest.approx([w1, w2], abs=1e-12)
        assert sum(combo.weights) == pytest.approx(1.0)
    # The branches the sequence must exercise actually occurred.
    rising = [i for i in range(1, len(RECORDED)) if any(
        RECORDED[i][k] > RECORDED[i - 1][k] for k in (0, 1))]
    assert rising == [3, 6, 8]


def test_first_update_is_the_normalised_reciprocals_and_weights_start_as_given() -> None:
    combo = WeightedSum(CrossEntropy(), GeneralizedDiceLoss(), weights=(3, 1), adaptive=True)
    assert combo.weights == [0.75, 0.25]
    combo.update([2.0, 0.5])
    assert combo.weights == pytest.approx([0.2, 0.8])
    assert combo.previous == [2.0, 0.5]


def test_zero_where_the_study_divides_takes_the_limit() -> None:
    # An unchanged loss has d = 0: 1/d is infinite, so it takes all of d's share.
    w = adaptive_update([0.4, 0.6], [1.0, 2.0], [0.5, 2.0], alpha=0.5)
    assert w == pytest.approx([0.2, 0.8])  # round(0.5*0.4 + 0.5*0) = 0.2, 0.3 + 0.5
    assert adaptive_update([0.5, 0.5], None, [0.0, 1.0], alpha=0.9) == [1.0, 0.0]


def test_non_finite_losses_leave_the_weights_alone() -> None:
    combo = _scripted_sum(0.9)
    combo.update([1.0, 0.5])
    before = (list(combo.weights), list(combo.previous))
    combo.update([math.nan, 0.4])
    assert (combo.weights, combo.previous) == before


def test_weights_are_constants_of_the_graph_update_before_backward() -> None:
    # The old buffer was overwritten in place before backward ("modified by an inplace
    # operation"); a step-mode update between forward and backward must be harmless.
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=gen, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 5), generator=gen)
    combo = _scripted_sum(0.9)
    combo.update([1.0, 1.0])
    loss = combo(logits, target)
    combo.update([0.5, 0.9])
    loss.backward()
    expected = 0.5 * CrossEntropy()(logits, target) + 0.5 * GeneralizedDiceLoss()(logits, target)
    torch.testing.assert_close(loss, expected)
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_main_aux_terms_come_from_the_main_head_only() -> None:
    gen = torch.Generator().manual_seed(1)
    out = torch.randn(2, 3, 4, 5, generator=gen)
    aux = torch.randn(2, 3, 4, 5, generator=gen)
    target = torch.randint(0, 3, (2, 4, 5), generator=gen)
    combo = WeightedSum(CrossEntropy(), GeneralizedDiceLoss(), weights=(0.7, 0.3), names=NAMES)
    total, terms = MainAuxLoss(combo, aux_weight=0.4).with_terms({"out": out, "aux": aux}, target)
    assert set(terms) == set(NAMES)
    torch.testing.assert_close(terms["ce"], CrossEntropy()(out, target))
    torch.testing.assert_close(terms["generalized_dice"], GeneralizedDiceLoss()(out, target))
    torch.testing.assert_close(total, combo(out, target) + 0.4 * combo(aux, target))
    assert MainAuxLoss(CrossEntropy()).with_terms(out, target)[1] == {}


def test_state_round_trips_through_the_state_dict() -> None:
    combo = _scripted_sum(0.9)
    for losses in RECORDED[:3]:
        combo.update(losses)
    state = combo.state_dict()
    fresh = _scripted_sum(0.9)
    fresh.load_state_dict(state)
    assert (fresh.weights, fresh.previous) == (combo.weights, combo.previous)
    # A checkpoint from before the extra state (weights as buffers) still loads.
    legacy = {"weights": torch.tensor([0.3, 0.7]), "smoothed_ratio": torch.ones(2),
              "previous": torch.full((2,), math.nan)}
    old = _scripted_sum(0.9)
    old.load_state_dict(legacy)
    assert old.weights == [0.5, 0.5] and old.previous is None


def test_build_loss_names_and_errors() -> None:
    combo = build_loss({"name": "ce", "second": "generalized_dice", "adaptive": True,
                        "adaptive_alpha": 0.5})
    assert isinstance(combo, WeightedSum)
    assert combo.names == NAMES and combo.adaptive and combo.alpha == 0.5
    with pytest.raises(ConfigError, match="loss.second"):
        build_loss({"name": "ce", "adaptive": True})
    with pytest.raises(ConfigError, match="must differ"):
        build_loss({"name": "dice", "second": "dice"})


# --- real training runs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "synthetic"
    return make_synthetic(root, n_train=9, n_val=4, n_test=4, size=(32, 40), num_classes=3)


def _recipe_dict(data: Path, model: dict, epochs: int = 3, **loss) -> dict:
    return {
        "name": "adaptive",
        "data": {"spec": f"folder:{data}", "batch_size": 4, "num_workers": 0},
        "model": model,
        "augment": {"crop_size": [32, 32], "scale_range": [0.75, 1.25]},
        "loss": {"name": "ce", **loss},
        "trainer": {"max_epochs": epochs, "progress": False, "checkpoint_every_n_steps": 1},
    }


def _logged(history: list[dict]) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    losses = [(row["loss_ce"], row["loss_generalized_dice"]) for row in history]
    weights = [(row["w_ce"], row["w_generalized_dice"]) for row in history]
    return losses, weights


def _assert_weights_follow_the_study(history: list[dict], alpha: float) -> None:
    losses, weights = _logged(history)
    assert all(math.isfinite(v) for pair in losses + weights for v in pair)
    for got, want in zip(weights, study_oracle(losses, alpha), strict=True):
        assert round(got[0], 3) == round(want[0], 3)
        assert round(got[1], 3) == round(want[1], 3)


@pytest.mark.parametrize("model", [TINY_UNET, TINY_AUX], ids=["no_aux", "aux"])
def test_seglab_train_with_adaptive_ce_and_generalized_dice(
    model: dict, synthetic: Path, tmp_path: Path
) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_recipe_dict(synthetic, model)))
    run = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["train", str(recipe), "loss.second=generalized_dice", "loss.adaptive=true",
         "--run-dir", str(run), "--json"],
    )
    assert result.exit_code == 0, result.output
    history = read_history(run / "history.csv")
    assert [row["epoch"] for row in history] == [1, 2, 3]
    _assert_weights_follow_the_study(history, alpha=0.9)
    # Each epoch trained with the weights the previous epoch ended with (0.5, 0.5 first):
    # without an aux head train_loss is exactly that weighted sum of the epoch's terms.
    _, weights = _logged(history)
    for row, (w1, w2) in zip(history, [(0.5, 0.5), *weights[:-1]], strict=True):
        weighted = w1 * row["loss_ce"] + w2 * row["loss_generalized_dice"]
        if model is TINY_UNET:
            assert row["train_loss"] == pytest.approx(weighted, rel=1e-5)
        else:  # plus 0.4 x the aux head's loss
            assert row["train_loss"] > weighted


def test_adaptive_weights_survive_resume(synthetic: Path, tmp_path: Path) -> None:
    loss = {"second": "generalized_dice", "adaptive": True, "adaptive_alpha": 0.7}
    run = tmp_path / "run"
    fit(Recipe.from_dict(_recipe_dict(synthetic, TINY_UNET, epochs=2, **loss)), run)
    assert len(read_history(run / "history.csv")) == 2
    fit(Recipe.from_dict(_recipe_dict(synthetic, TINY_UNET, epochs=3, **loss)), run, resume=True)
    history = read_history(run / "history.csv")
    assert [row["epoch"] for row in history] == [1, 2, 3]
    # Epoch 3's update needs epoch 2's losses and weights: both came from the checkpoint.
    _assert_weights_follow_the_study(history, alpha=0.7)
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    saved = state["state_dict"]["criterion.loss._extra_state"]
    assert saved["weights"] == pytest.approx([history[-1]["w_ce"],
                                             history[-1]["w_generalized_dice"]], abs=1e-9)


def test_step_granularity_updates_every_step(
    synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[float, float]] = []
    update = WeightedSum.update

    def recording(self: WeightedSum, losses) -> None:
        seen.append(tuple(losses))
        update(self, losses)

    monkeypatch.setattr(WeightedSum, "update", recording)
    loss = {"second": "generalized_dice", "adaptive": True, "adaptive_every": "step"}
    run = fit(Recipe.from_dict(_recipe_dict(synthetic, TINY_UNET, epochs=2, **loss)),
              tmp_path / "run")
    history = read_history(run / "history.csv")
    # 9 images, batch 4, no batch of one: 2 steps an epoch, so 4 updates from the step losses.
    assert len(seen) == 4
    oracle = study_oracle(seen, 0.9)
    _, weights = _logged(history)
    for got, want in zip(weights, [oracle[1], oracle[3]], strict=True):
        assert got == pytest.approx(want, abs=1e-9)
    # Each epoch's logged terms are the mean of its steps' terms (equal batch sizes).
    losses, _ = _logged(history)
    for epoch, logged in enumerate(losses):
        steps = seen[2 * epoch : 2 * epoch + 2]
        means = tuple(sum(v) / 2 for v in zip(*steps, strict=True))
        assert logged == pytest.approx(means, rel=1e-5)


def test_fixed_weights_log_terms_and_constant_weights(synthetic: Path, tmp_path: Path) -> None:
    loss = {"second": "generalized_dice", "weights": [0.7, 0.3]}
    run = fit(Recipe.from_dict(_recipe_dict(synthetic, TINY_UNET, epochs=1, **loss)),
              tmp_path / "run")
    (row,) = read_history(run / "history.csv")
    assert (row["w_ce"], row["w_generalized_dice"]) == (0.7, 0.3)
    weighted = 0.7 * row["loss_ce"] + 0.3 * row["loss_generalized_dice"]
    assert row["train_loss"] == pytest.approx(weighted, rel=1e-5)
