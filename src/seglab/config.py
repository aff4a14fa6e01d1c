"""Recipes: one pydantic model describing a training run, read from YAML, overridable.

A recipe has eight sections: ``data``, ``augment``, ``model``, ``loss``, ``optim``,
``schedule``, ``eval`` and ``trainer``. Every field has a default except ``data.spec`` and
``model.name``. Unknown keys are errors (a typo never silently falls back to a default).

Command-line overrides are ``section.field=value`` strings; the value is read as YAML
(``optim.lr=0.02``, ``augment.crop_size=[360,480]``, ``model.options.weights=null``).
``${SEGLAB_DATA}`` in ``data.spec`` expands to the real-data root (:func:`seglab.paths.data_root`).
The resolved recipe is saved as ``recipe.yaml`` in the run folder.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.fields import FieldInfo

from seglab import recipe_loss
from seglab.errors import ConfigError
from seglab.io_utils import atomic_write_text
from seglab.paths import data_root
from seglab.recipe_checks import (
    batch_limit,
    check_run_name,
    device_list,
    non_finite_keys,
    positive_size,
)
from seglab.yaml_limits import YamlTooLarge, load_yaml, short_repr

Size = tuple[int, int]
# trainer.precision and every inference precision: the one list of names (seglab.artifacts.device).
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
DATA_ROOT_VAR = "${SEGLAB_DATA}"


def _as_size(value: Any) -> Any:
    """Accept ``512`` or ``[360, 480]`` for a (height, width) size."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    return value


class _Section(BaseModel):
    # allow_inf_nan: a NaN/inf learning rate or weight decay trains to NaN weights.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @classmethod
    def known_fields(cls) -> dict[str, FieldInfo]:
        """The keys a recipe may write in this section, with their bounds and descriptions."""
        return dict(cls.model_fields)


class DataConfig(_Section):
    """Where the data is and how it is batched."""

    spec: str = Field(description="'<format>:<path>', e.g. 'camvid:${SEGLAB_DATA}/camvid11'")
    options: dict[str, Any] = Field(default_factory=dict, description="adapter options")
    train_split: str = Field("train", description="split to train on; 'train+val' joins splits")
    val_split: str | None = "val"
    test_split: str | None = "test"
    batch_size: int = Field(8, ge=2, description="training batch (>= 2: BatchNorm needs it)")
    eval_batch_size: int = Field(4, ge=1)
    num_workers: int = Field(2, ge=0)
    cache: Literal["auto", "on", "off"] = Field(
        "auto", description="keep decoded train/val samples in memory: auto = when they fit "
        "(a quarter of free memory, at most 4 GiB; SEGLAB_CACHE_BYTES), on, off"
    )
    mean: tuple[float, ...] | None = Field(
        None, description="per-channel normalisation mean on the 0..1 scale, one value per "
        "input band (None = ImageNet, RGB only)"
    )
    std: tuple[float, ...] | None = None

    @model_validator(mode="after")
    def _mean_std_per_band(self) -> DataConfig:
        given = self.mean if self.std is None else self.std if self.mean is None else None
        if given is not None and len(given) != 3:  # the other one would be ImageNet's (RGB)
            raise ValueError("give both data.mean and data.std (one value per band) for "
                             f"{len(given)}-band images")
        if self.mean is not None and self.std is not None:
            if not self.mean or len(self.mean) != len(self.std):
                raise ValueError(f"data.mean has {len(self.mean)} values and data.std "
                                 f"{len(self.std)}: one value per input band in each")
            if min(self.std) <= 0:
                raise ValueError(f"data.std values must be > 0, got {list(self.std)}")
        return self

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_yaml_bool(cls, value: Any) -> Any:
        # YAML reads a bare on/off/true/false as a boolean.
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("spec")
    @classmethod
    def _spec_has_format(cls, value: str) -> str:
        if ":" not in value:
            raise ValueError(
                f"{value!r} is not '<format>:<path>' (for example 'camvid:/data/camvid11' "
                "or 'folder:./my_data')"
            )
        return value


class AugmentConfig(_Section):
    """Training augmentation (``seglab.data.transforms.train_transform``) and eval resize."""

    crop_size: Size | None = (512, 512)
    scale_range: tuple[float, float] | None = (0.5, 2.0)
    hflip: float = Field(0.5, ge=0, le=1)
    rotation: float = Field(0.0, ge=0, le=180)
    brightness: float = Field(0.0, ge=0)
    saturation: float = Field(0.0, ge=0)
    noise_sigma: float = Field(0.0, ge=0)
    resize: Size | None = Field(None, description="resize training images first (H, W)")
    eval_resize: Size | None = Field(
        None, description="model input size for val/test; logits are scored at label size"
    )

    @field_validator("crop_size", "resize", "eval_resize", mode="before")
    @classmethod
    def _sizes(cls, value: Any) -> Any:
        return _as_size(value)

    @field_validator("crop_size", "resize", "eval_resize")
    @classmethod
    def _sizes_positive(cls, value: Size | None) -> Size | None:
        return positive_size(value)

    @field_validator("scale_range")
    @classmethod
    def _scale_range_positive(cls, value: tuple[float, float] | None) -> Any:
        if value is not None and not 0 < value[0] <= value[1]:
            raise ValueError(f"augment.scale_range must be 0 < low <= high, got {list(value)}")
        return value


class ModelConfig(_Section):
    """A registry model (``seglab models list``), its options and freeze policy."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    freeze: str | None = Field(None, description="freeze policy, e.g. 'backbone' or 'last:3'")
    bn_momentum: float | None = Field(
        None,
        gt=0,
        le=1,
        description="set every BatchNorm's momentum (e.g. 0.1: torchvision's MobileNets use "
        "0.01, whose running statistics lag far behind in short from-scratch runs)",
    )


class LossConfig(_Section):
    """Loss (``seglab.losses.build_loss``), class weights and the aux-head weight.

    Each registered loss's own options sit flat beside these fields (``loss.<option>``),
    validated by the loss's options model (``seglab.loss_options``, ``seglab.recipe_loss``).
    """

    model_config = ConfigDict(extra="allow")  # the options; a key no loss owns is refused

    name: str = "ce"
    second: str | None = Field(None, description="second loss for a weighted sum")
    weights: tuple[float, float] = (0.5, 0.5)
    adaptive: bool = Field(
        False, description="adapt the two weights (the Cityscapes U-Net study's rule)"
    )
    adaptive_alpha: float = Field(
        0.9, ge=0, le=1, description="adaptive: share of the new value, w = (1-a) w + a d"
    )
    adaptive_every: Literal["epoch", "step"] = Field(
        "epoch", description="adaptive: update on the epoch-mean losses (the study) or every step"
    )
    class_weights: str | None = Field(
        None, description="class-weight strategy from seglab.data.stats (None = unweighted)"
    )
    class_weight_params: dict[str, Any] = Field(default_factory=dict)
    aux_weight: float = Field(0.4, ge=0)

    _registered = field_validator("name", "second")(recipe_loss.registered_loss)
    _options = model_validator(mode="wrap")(recipe_loss.with_options)
    _class_weights = model_validator(mode="after")(recipe_loss.known_class_weights)
    _aux_weight_last = model_serializer(mode="wrap")(recipe_loss.aux_weight_last)

    @classmethod
    def known_fields(cls) -> dict[str, FieldInfo]:
        """The section's fields and every registered loss's options."""
        return recipe_loss.fields_with_options(cls.model_fields)

    def __setattr__(self, name: str, value: Any) -> None:
        # validate_assignment checks the declared fields; an option is checked by its model.
        if name not in type(self).model_fields and not name.startswith("_"):
            value = recipe_loss.checked_option(type(self).__name__, name, value)
        super().__setattr__(name, value)


class OptimConfig(_Section):
    """Optimizer and learning rates."""

    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "sgd"
    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    head_lr_mult: float = Field(
        1.0, gt=0, description="learning-rate multiplier for the decoder/head parameters"
    )

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimConfig:
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optim.name=sgd and optim.momentum > 0")
        return self


class ScheduleConfig(_Section):
    """Learning-rate schedule, stepped every iteration, with optional linear warm-up."""

    name: Literal["poly", "step", "cosine", "onecycle", "constant"] = "poly"
    power: float = Field(0.9, gt=0, description="poly exponent")
    step_size: int = Field(30, ge=1, description="step: epochs between decays")
    gamma: float = Field(0.1, gt=0, le=1, description="step: decay factor")
    min_lr: float = Field(0.0, ge=0)
    warmup_iters: int = Field(0, ge=0)
    warmup_factor: float = Field(0.1, gt=0, le=1, description="warm-up starts at factor * lr")
    pct_start: float = Field(0.3, gt=0, lt=1, description="onecycle: fraction spent rising")


class EvalConfig(_Section):
    """Validation/test inference (``seglab.engine.inference.predict_logits``)."""

    mode: Literal["whole", "slide"] = "whole"
    crop: Size | None = None
    stride: Size | None = None
    scales: list[float] = Field(default_factory=lambda: [1.0])
    flip: bool = False
    num_panels: int = Field(4, ge=0, description="image|truth|prediction panels written")

    @field_validator("crop", "stride", mode="before")
    @classmethod
    def _sizes(cls, value: Any) -> Any:
        return _as_size(value)

    @field_validator("crop", "stride")
    @classmethod
    def _sizes_positive(cls, value: Size | None) -> Size | None:
        return positive_size(value)

    @model_validator(mode="after")
    def _slide_needs_crop(self) -> EvalConfig:
        if self.mode == "slide" and self.crop is None:
            raise ValueError("eval.mode=slide needs eval.crop (the window size)")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"eval.scales must be positive numbers, got {self.scales}")
        return self


class TrainerConfig(_Section):
    """Loop length, precision, checkpoints, early stopping, reproducibility."""

    max_epochs: int = Field(50, ge=1)
    max_minutes: float | None = Field(
        None, gt=0, description="time budget: the epoch count and LR schedule are fitted to it"
    )
    precision: Precision = Field(
        "auto",
        description="auto = on a CPU with bf16 hardware the faster of bf16 and fp32 "
        "(measured), else fp32; bf16/fp16 AMP on GPU; fp32 turns it off",
    )
    channels_last: bool = True
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="random seed (numpy's range)")
    deterministic: bool = False
    early_stop_patience: int | None = Field(
        10, ge=1, description="stop after this many validations without a better val mIoU"
    )
    val_every: int = Field(1, ge=1, description="validate every N epochs")
    checkpoint_every_n_steps: int | None = Field(
        50, ge=1, description="also save last.ckpt every N steps (a killed run loses little)"
    )
    folds: int | None = Field(None, ge=2, description="k-fold cross-validation on train+val")
    accelerator: str = Field("auto", description="auto, cpu, gpu, cuda, mps, tpu, ...")
    devices: int | str = Field(
        "auto", description="auto, a count (-1 = all) or a list of ids like '0,1'"
    )
    num_nodes: int = Field(1, ge=1, description="machines taking part (each runs `devices`)")
    strategy: str = Field(
        "auto", description="Lightning strategy: auto, ddp, ddp_spawn, fsdp, ..."
    )
    sync_batchnorm: bool = Field(
        False, description="synchronise BatchNorm statistics across processes (frozen BN stays)"
    )
    loggers: list[Literal["csv", "tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list, description="experiment trackers beside history.csv"
    )
    log_every_n_steps: int = Field(10, ge=1)
    progress: bool = True
    limit_train_batches: int | float | None = Field(None, description="debug: batches per epoch")

    _limit_in_range = field_validator("limit_train_batches")(batch_limit)
    _devices_form = field_validator("devices")(device_list)


class Recipe(_Section):
    """A complete, validated training recipe."""

    name: str = Field("run", description="run name: the folder under runs/")
    data: DataConfig
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelConfig
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)

    @field_validator("name")
    @classmethod
    def _name_is_one_folder(cls, value: str) -> str:
        check_run_name(value)
        return value

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], overrides: list[str] | None = None, source: str = "recipe"
    ) -> Recipe:
        """Validate ``data`` (after applying ``overrides``); errors name the field."""
        if not isinstance(data, dict):
            kind = type(data).__name__
            raise ConfigError(f"{source}: expected a mapping of sections, got {kind}")
        merged = apply_overrides(data, overrides or [])
        bad = non_finite_keys(merged)
        if bad:
            raise ConfigError(f"{source}: {', '.join(bad)} must be a finite number (NaN and "
                              "infinity would train to NaN weights)")
        try:
            recipe = cls.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(_explain(exc, source, cls, overrides or [])) from None
        recipe.data.spec = expand_data_root(recipe.data.spec)
        return recipe

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: list[str] | None = None) -> Recipe:
        """Read a YAML recipe (``None``: start from overrides alone) and apply ``overrides``."""
        if path is None:
            return cls.from_dict({}, overrides, source="command line")
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"recipe file {path} is a folder, not a YAML file")
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        data = load_yaml(read_recipe_text(path), f"recipe file {path}") or {}
        return cls.from_dict(data, overrides, source=f"recipe {path}")

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-safe plain data (tuples become lists)."""
        return self.model_dump(mode="json")

    def to_yaml(self, path: str | Path) -> None:
        """Write the resolved recipe atomically."""
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def read_recipe_text(path: Path) -> str:
    """The text of a recipe file; ConfigError naming the file, line and byte when it is not
    readable UTF-8 (a Latin-1 accent, a binary file, a BOM of another encoding)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read recipe file {path}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")  # a UTF-8 byte-order mark is harmless
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"recipe file {path} is not UTF-8 text: byte 0x{raw[exc.start]:02x} at line "
            f"{line}, column {column}; save it as UTF-8"
        ) from None


def expand_data_root(spec: str) -> str:
    """Replace ``${SEGLAB_DATA}`` in a data spec with the real-data root."""
    if DATA_ROOT_VAR not in spec:
        return spec

    root = data_root()
    if root is None:
        raise ConfigError(
            f"data.spec {spec!r} uses {DATA_ROOT_VAR} but no data root was found: set the "
            "SEGLAB_DATA environment variable to the folder holding your datasets"
        )
    return spec.replace(DATA_ROOT_VAR, str(root))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``section.field=value`` overrides applied (YAML values)."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"override {item!r} is not 'section.field=value' (for example optim.lr=0.02)"
            )
        try:
            value = load_yaml(raw, f"override {key}") if raw.strip() else ""
        except YamlTooLarge:
            raise
        except ConfigError:
            value = raw  # not YAML: keep the text (e.g. a path with odd characters)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def _section_at(model: Any, parts: tuple[Any, ...]) -> type[BaseModel] | None:
    """The recipe section reached from ``model`` along ``parts`` (None: not a section)."""
    for part in parts:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = field.annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _field_description(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """The description of the field at ``loc`` (for error messages), if it has one."""
    section = _section_at(model, loc[:-1]) if loc else None
    field = section.known_fields().get(str(loc[-1])) if section is not None else None
    return field.description if field is not None else None


def _close_field(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """The known field nearest to the unknown last part of ``loc`` (``optim.lrr`` -> lr)."""
    section = _section_at(model, loc[:-1]) if loc else None
    if section is None:
        return None
    close = difflib.get_close_matches(str(loc[-1]), list(section.known_fields()), n=1,
                                      cutoff=0.6)
    return ".".join([*map(str, loc[:-1]), close[0]]) if close else None


def _explain(exc: ValidationError, source: str, model: type[BaseModel],
             overrides: list[str] | tuple[str, ...] = ()) -> str:
    given = {item.partition("=")[0].strip() for item in overrides}
    lines = [f"{source} is invalid:"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "missing":
            lines.append(f"  {where}: required but not given")
        elif err["type"] == "extra_forbidden":
            close = _close_field(model, err["loc"])
            hint = f"did you mean {close}?" if close else "check the spelling"
            origin = " (from the command line)" if where in given else ""
            lines.append(f"  {where}: unknown field{origin}; {hint}")
        else:
            message = err["msg"].removeprefix("Value error, ")
            # A custom validator's message already explains; a generic one gets the field's doc.
            generic = err["type"] != "value_error"
            about = _field_description(model, err["loc"]) if generic else None
            hint = f" [{where}: {about}]" if about else ""
            lines.append(f"  {where}: {message} (got {short_repr(err.get('input'))}){hint}")
    return "\n".join(lines)
