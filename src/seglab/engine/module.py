"""The LightningModule: normalise on the device, forward, loss, dataset-level validation metrics.

Batches are ``(uint8 images [N,3,H,W], int64 masks [N,H,W])`` straight from the loader; the
module normalises them on the device (``seglab.data.transforms.normalize``), runs the model in
channels_last when asked, and scores validation at the label's own resolution (the logits are
upsampled to the mask size; with ``augment.eval_resize`` only the image is resized).

Hyper-parameters are plain JSON data (the resolved recipe, the class map, the class weights)
so Lightning checkpoints load with ``torch.load(..., weights_only=True)``.

With two losses (``loss.second``) the module averages the main head's unweighted loss terms
over each training epoch; :meth:`SegmentationModule.close_train_epoch` returns them with the
weights (the ``loss_<name>`` / ``w_<name>`` history columns) and, for ``loss.adaptive``,
makes the once-per-epoch update from those epoch means (``loss.adaptive_every=step``: every
step instead, from the step's losses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from torchmetrics import MeanMetric

from seglab.config import Recipe
from seglab.data.classes import ClassMap
from seglab.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from seglab.engine.divergence import check_loss, check_weights
from seglab.engine.schedules import IterationSchedule, build_optimizer
from seglab.losses import MainAuxLoss, WeightedSum, build_loss
from seglab.metrics import MEAN_ACC, MIOU, PIXEL_ACC, VAL_LOSS, VAL_MIOU, val_key
from seglab.metrics.confusion import SegMetric
from seglab.models.cpu_speedups import apply_cpu_speedups
from seglab.models.freeze import apply_freeze
from seglab.models.registry import build_model


def resize_images(images: torch.Tensor, size: Sequence[int] | None) -> torch.Tensor:
    """Resize a float batch to ``size`` (H, W) bilinearly (antialiased when shrinking)."""
    if size is None or tuple(images.shape[-2:]) == tuple(size):
        return images
    shrink = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(
        images, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink
    )


def upsample_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear upsampling of ``[N,C,h,w]`` logits to the label size ``(H, W)``."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


class SegmentationModule(L.LightningModule):
    """Train/validate one registry model under a :class:`~seglab.config.Recipe`.

    Args:
        recipe: the resolved recipe (a checkpoint passes it as plain data, ``Recipe.to_dict()``).
        classmap: the dataset's class map (or ``ClassMap.to_dict()``).
        class_weights: per-class loss weights (plain floats) or None.
        model: the recipe's model, already built (:func:`seglab.engine.run_plan.resolve_run`
            builds it to measure the precision); None builds it here.

    The hyper-parameters saved in checkpoints are plain data, so checkpoints load with
    ``weights_only=True``.
    """

    def __init__(
        self,
        recipe: Recipe | dict[str, Any],
        classmap: ClassMap | dict[str, Any],
        class_weights: list[float] | None = None,
        model: torch.nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.recipe = recipe if isinstance(recipe, Recipe) else Recipe.from_dict(recipe)
        self.classmap = classmap if isinstance(classmap, ClassMap) else ClassMap.from_dict(classmap)
        self.save_hyperparameters({"recipe": self.recipe.to_dict(),
                                   "classmap": self.classmap.to_dict(),
                                   "class_weights": class_weights})
        cfg = self.recipe
        self.mean = tuple(cfg.data.mean or IMAGENET_MEAN)
        self.std = tuple(cfg.data.std or IMAGENET_STD)
        self.model = model if model is not None else build_segmentation_model(
            cfg, self.classmap.num_classes)
        weights = None if class_weights is None else torch.tensor(class_weights)
        loss = build_loss(cfg.loss, ignore_index=self.classmap.ignore_index, class_weights=weights)
        self.criterion = MainAuxLoss(loss, aux_weight=cfg.loss.aux_weight)
        names = loss.names if isinstance(loss, WeightedSum) else ()
        self.term_means = torch.nn.ModuleDict({name: MeanMetric() for name in names})
        self._closed_epoch: tuple[int, dict[str, float]] | None = None
        self.val_metric = SegMetric(
            self.classmap.num_classes, self.classmap.ignore_index, names=self.classmap.names
        )
        self.train_loss = MeanMetric()
        # The epoch's running loss means are saved with checkpoints, so a run resumed
        # mid-epoch logs the same epoch loss as one that never stopped.
        self.train_loss.persistent(True)
        for metric in self.term_means.values():
            metric.persistent(True)
        self.val_loss = MeanMetric()
        self.last_val: dict[str, Any] = {}
        self.schedule: IterationSchedule | None = None

    @property
    def combo(self) -> WeightedSum | None:
        """The two-loss weighted sum of the recipe (None for a single loss)."""
        loss = self.criterion.loss
        return loss if isinstance(loss, WeightedSum) else None

    # -- forward -----------------------------------------------------------------------------
    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> normalised float batch on the device (channels_last when enabled)."""
        x = normalize(images, self.mean, self.std)
        if self.recipe.trainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(self.prepare(images))

    def setup(self, stage: str) -> None:
        if self.recipe.trainer.channels_last:
            self.model.to(memory_format=torch.channels_last)

    # -- training ----------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        images, masks = batch
        outputs = self(images)
        loss, terms = self.criterion.with_terms(outputs, masks)
        extra_loss = getattr(self.model, "extra_loss", None)
        if extra_loss is not None:  # a model's own training-only loss (STDC's detail head)
            loss = loss + extra_loss(outputs, masks, self.classmap.ignore_index)
        check_loss(loss, self.recipe, self.trainer.global_step + 1, self.trainer.current_epoch)
        self.train_loss.update(loss.detach(), weight=images.shape[0])
        for name, value in terms.items():
            self.term_means[name].update(value, weight=images.shape[0])
        if self.combo is not None and self.combo.adaptive:
            if self.recipe.loss.adaptive_every == "step":
                # Every process makes the same update: the step's losses averaged across them.
                reduce = self.trainer.strategy.reduce
                names = self.combo.names
                self.combo.update([float(reduce(terms[n], reduce_op="mean")) for n in names])
        self.log("train_loss", loss.detach(), prog_bar=True, batch_size=images.shape[0])
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=False)
        return loss

    def close_train_epoch(self) -> dict[str, float]:
        """End of the training epoch's batches: epoch means of the main head's loss terms,
        the adaptive update (``adaptive_every=epoch``), and the history columns
        ``loss_<name>`` (epoch mean) and ``w_<name>`` (weight after the epoch's updates).

        Called at validation start (so checkpoints saved after validation hold the updated
        weights) and at the epoch's end, whichever comes first; once per epoch.
        """
        if self._closed_epoch is not None and self._closed_epoch[0] == self.current_epoch:
            return self._closed_epoch[1]
        if self.combo is None:
            return {}
        means = {}
        for name, metric in self.term_means.items():
            means[name] = float(metric.compute()) if metric.update_count else math.nan
            metric.reset()
        if self.combo.adaptive and self.recipe.loss.adaptive_every == "epoch":
            self.combo.update([means[name] for name in self.combo.names])
        row = {f"loss_{name}": means[name] for name in self.combo.names}
        row.update({f"w_{n}": w for n, w in zip(self.combo.names, self.combo.weights, strict=True)})
        self._closed_epoch = (self.current_epoch, row)
        return row

    def on_train_epoch_end(self) -> None:
        self.close_train_epoch()

    def on_validation_epoch_start(self) -> None:
        if self.trainer.state.fn == TrainerFn.FITTING and not self.trainer.sanity_checking:
            self.close_train_epoch()
        self.val_metric.reset()
        self.val_loss.reset()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, masks = batch
        x = resize_images(self.prepare(images), self.recipe.augment.eval_resize)
        logits = upsample_logits(self.model(x)["out"], masks.shape[-2:])
        loss = self.criterion(logits, masks)  # the main head only: what evaluation scores
        self.val_loss.update(loss.detach(), weight=images.shape[0])
        self.val_metric.update(logits.detach(), masks)

    def on_validation_epoch_end(self) -> None:
        scores = self.val_metric.scores()  # compute() syncs the confusion matrix across processes
        self.last_val = {
            VAL_LOSS: float(self.val_loss.compute()),
            **{val_key(key): scores[key] for key in (MIOU, PIXEL_ACC, MEAN_ACC)},
        }
        for key, value in self.last_val.items():
            self.log(key, value, prog_bar=key in (VAL_MIOU, VAL_LOSS), sync_dist=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # NaN weights are never checkpointed (a resume or an export would carry them on).
        trainer = self._trainer  # None when a checkpoint is saved outside a fit
        step, epoch = (trainer.global_step, trainer.current_epoch) if trainer else (0, 0)
        check_weights(checkpoint.get("state_dict", {}), self.recipe, step, epoch)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Checkpoints from before the running means were saved lack their states: keep ours.
        state = checkpoint.get("state_dict")
        if isinstance(state, dict):
            for key, value in self.state_dict().items():
                if key.startswith(("train_loss.", "term_means.")) and key not in state:
                    state[key] = value

    # -- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.model, self.recipe.optim)
        total = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        self.schedule = IterationSchedule(
            optimizer, self.recipe.schedule, total, steps_per_epoch, self.recipe.optim.lr
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.schedule, "interval": "step", "frequency": 1},
        }


def build_segmentation_model(recipe: Recipe, num_classes: int) -> torch.nn.Module:
    """The recipe's registry model, BatchNorm momentum set, freeze policy and the exact CPU
    speed-ups (``models.cpu_speedups``) applied."""
    model = build_model(recipe.model.name, num_classes, **recipe.model.options)
    if recipe.model.bn_momentum is not None:
        for layer in model.modules():
            if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                layer.momentum = recipe.model.bn_momentum
    if recipe.model.freeze:
        apply_freeze(model, recipe.model.freeze)
    apply_cpu_speedups(model)
    return model
