"""Extension point: a loss. A dummy registered here is reachable from a recipe (validated with
its own options model), from ``seglab train`` (it is the loss the training step minimises) and
from the run folder's recipe.yaml and model card."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from pydantic import Field
from torch import nn
from typer.testing import CliRunner

from seglab.artifacts import rundir
from seglab.artifacts.model_card import CARD_FILE
from seglab.cli.main import app
from seglab.config import Recipe
from seglab.data.synthetic import make_synthetic
from seglab.errors import ConfigError
from seglab.losses import LossOptions, build_loss, loss_names, register_loss, unregister_loss


def test_a_loss_is_one_registered_module(tmp_path: Path) -> None:
    """How to add a loss: declare it in ``seglab/loss_options.py`` (a ``LossOptions`` model whose
    fields are the recipe's flat ``loss.<option>`` keys, prefixed with the loss's name, and
    ``declare_loss("<name>", Model)``: recipes are checked without torch), then write
    ``seglab/losses/<family>.py`` with the ``nn.Module`` and ``@register_loss("<name>",
    options=Model) def build(options, *, ignore_index, class_weights)`` and import it in
    ``seglab/losses/__init__.py``. A plugin's loss needs only ``register_loss``, as below."""
    calls: list[float] = []

    class ScaledOptions(LossOptions):
        dummy_scale: float = Field(1.0, gt=0, description="dummy: factor on the cross-entropy")

    class ScaledCrossEntropy(nn.Module):
        def __init__(self, scale: float, ignore_index: int) -> None:
            super().__init__()
            self.scale, self.ignore_index = scale, ignore_index

        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            calls.append(self.scale)
            return self.scale * F.cross_entropy(logits.float(), target.long(),
                                                ignore_index=self.ignore_index)

    @register_loss("dummy", options=ScaledOptions)
    def build_scaled(options: ScaledOptions, *, ignore_index: int,
                     class_weights: torch.Tensor | None) -> nn.Module:
        return ScaledCrossEntropy(options.dummy_scale, ignore_index)

    try:
        data = make_synthetic(tmp_path / "data", n_train=4, n_val=2, n_test=2, size=(32, 32),
                              num_classes=3)
        base = {"data": {"spec": f"folder:{data}", "batch_size": 2, "num_workers": 0,
                         "test_split": None},
                "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}},
                "augment": {"crop_size": [32, 32], "scale_range": None},
                "eval": {"num_panels": 0},
                "trainer": {"max_epochs": 1, "progress": False, "precision": "fp32"}}
        # A recipe: the name and the option are validated (bounds, typos) like built-in ones.
        recipe = Recipe.from_dict({**base, "loss": {"name": "dummy", "dummy_scale": 3}})
        assert recipe.loss.dummy_scale == 3.0 and "dummy" in loss_names()
        loss = build_loss(recipe.loss)
        assert isinstance(loss, ScaledCrossEntropy) and loss.scale == 3.0
        with pytest.raises(ConfigError, match=r"loss.dummy_scale: Input should be greater than "
                                              r"0 \(got 0\) \[loss.dummy_scale: dummy: factor"):
            Recipe.from_dict({**base, "loss": {"name": "dummy", "dummy_scale": 0}})
        with pytest.raises(ConfigError, match="did you mean loss.dummy_scale"):
            Recipe.from_dict(base, ["loss.dummy_scal=2"])
        # The CLI: seglab train minimises it, and the run folder says so.
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(base))
        run = tmp_path / "run"
        result = CliRunner().invoke(app, ["train", str(path), "loss.name=dummy",
                                          "loss.dummy_scale=2", "--run-dir", str(run)])
        assert result.exit_code == 0, result.output
        assert calls and set(calls) == {2.0}  # the training and validation steps used it
        saved = yaml.safe_load((run / "recipe.yaml").read_text())["loss"]
        assert (saved["name"], saved["dummy_scale"]) == ("dummy", 2.0)
        card = (rundir.model_dir(run) / CARD_FILE).read_text()
        assert "| loss | dummy (class weights: none) |" in card and "dummy_scale: 2.0" in card
    finally:
        unregister_loss("dummy")
    # Unregistered, the name is refused again, listing the registered ones.
    with pytest.raises(ConfigError, match=r"loss.name: Input should be 'ce', .* \(got 'dummy'\)"):
        Recipe.from_dict({**base, "loss": {"name": "dummy"}})
