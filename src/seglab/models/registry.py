"""One registry for every model: register a builder by name, list, build, rebuild from a spec.

Model modules register their builders beside their code (``register_model(...)`` at import
time) and the package face, ``seglab/models/__init__.py``, imports every model module; this
module knows none of them. Importing ``seglab.models.registry`` always runs the package's
``__init__`` first (Python imports a parent package before its submodules), so every model
is registered before any lookup here, whichever ``seglab.models`` module a user imports first.

A builder is a plain function ``builder(num_classes, **options) -> nn.Module`` whose keyword
arguments are the model's options. ``build_model`` checks option names against the builder's
signature (so a typo gets a clear error, not a silent default), calls it, and stamps
``model.seglab_spec`` so ``build_model(**model.seglab_spec)``-style rebuilding always works.
"""

from __future__ import annotations

import difflib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from seglab.errors import ConfigError, ModelError
from seglab.yaml_limits import YamlTooLarge, load_yaml, short_text

# Options that only decide where initial weights come from, never the architecture.
# Rebuilding a saved model (from_pretrained) drops them so it never downloads anything.
WEIGHT_OPTIONS = ("weights", "backbone_weights", "encoder_weights", "checkpoint")


@dataclass(frozen=True)
class ModelInfo:
    """What a user needs to choose a model before building it."""

    name: str
    family: str
    backbone: str
    description: str
    weights: tuple[str, ...] = ()  # named whole-model weight sets, e.g. ("coco_voc",)
    backbone_weights: tuple[str, ...] = ()  # named backbone weight sets, e.g. ("imagenet",)
    paper: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)  # option -> default value

    @property
    def options(self) -> tuple[str, ...]:
        """Names of the options ``build_model`` accepts for this model."""
        return tuple(self.defaults)

    @property
    def pretrained(self) -> str:
        """Short human summary of the weights available."""
        parts = list(self.weights) + [f"{w} (backbone)" for w in self.backbone_weights]
        return ", ".join(parts) or "-"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description (used by ``seglab models list --json``)."""
        return {
            "name": self.name,
            "family": self.family,
            "backbone": self.backbone,
            "description": self.description,
            "weights": list(self.weights),
            "backbone_weights": list(self.backbone_weights),
            "paper": self.paper,
            "options": {k: _json_safe_default(v) for k, v in self.defaults.items()},
        }


@dataclass(frozen=True)
class _Entry:
    info: ModelInfo
    builder: Callable[..., nn.Module]
    fixed: dict[str, Any]  # options a preset pins (e.g. backbone) that users may not change


_REGISTRY: dict[str, _Entry] = {}

# A builder resolver for a family of dynamic names: ``resolver(name) -> (builder, metadata)``,
# metadata being ``register_model``'s keyword arguments (family, backbone, description, ...).
Resolver = Callable[[str], tuple[Callable[..., nn.Module], dict[str, Any]]]


@dataclass(frozen=True)
class _Family:
    resolver: Resolver
    pattern: str  # how names read, e.g. "smp:<arch>/<encoder>"
    description: str
    examples: tuple[str, ...]  # representative names ``list_models`` shows


_FAMILIES: dict[str, _Family] = {}  # prefix ("smp") -> family
_RESOLVED: dict[str, _Entry] = {}  # dynamic names resolved so far


def register_family(prefix: str, resolver: Resolver, *, pattern: str, description: str,
                    examples: tuple[str, ...] = ()) -> None:
    """Make every name ``<prefix>:...`` buildable through ``resolver`` (adapters: smp, hf).

    The resolver runs on first use of a name and may raise ModelError (unknown architecture,
    missing optional package); ``list_models`` shows ``examples`` for the family.
    """
    if prefix in _FAMILIES or ":" in prefix:
        raise ModelError(f"model family prefix {prefix!r} is registered twice or has a ':'")
    _FAMILIES[prefix] = _Family(resolver, pattern, description, tuple(examples))


def _resolve(name: str) -> _Entry | None:
    """The entry of a dynamic family name, or None when ``name`` has no family prefix."""
    prefix, sep, _ = name.partition(":")
    if not sep or prefix not in _FAMILIES:
        return None
    if name not in _RESOLVED:
        builder, meta = _FAMILIES[prefix].resolver(name)
        _RESOLVED[name] = _make_entry(name, builder, **meta)
    return _RESOLVED[name]


def _json_safe_default(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_json_safe_default(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe_default(v) for k, v in value.items()}
    return value


def register_model(
    name: str,
    builder: Callable[..., nn.Module],
    *,
    family: str,
    backbone: str,
    description: str,
    weights: tuple[str, ...] = (),
    backbone_weights: tuple[str, ...] = (),
    paper: str = "",
    fixed: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
) -> None:
    """Register ``builder`` under ``name``.

    ``fixed`` pins options for a named preset (e.g. ``backbone="resnet18"``); a user passing a
    different value gets an error pointing to the generic model. ``defaults`` overrides the
    builder's own defaults for this preset.
    """
    if name in _REGISTRY:
        raise ModelError(f"model name {name!r} is registered twice")
    _REGISTRY[name] = _make_entry(
        name, builder, family=family, backbone=backbone, description=description,
        weights=weights, backbone_weights=backbone_weights, paper=paper, fixed=fixed,
        defaults=defaults,
    )


def unregister_model(name: str) -> None:
    """Remove a model ``register_model`` added (a test's or a plugin's); unknown names too."""
    _REGISTRY.pop(name, None)


def _make_entry(
    name: str,
    builder: Callable[..., nn.Module],
    *,
    fixed: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
    **meta: Any,
) -> _Entry:
    """The entry of ``builder``: its options read from its signature, ``meta`` (family,
    backbone, description, weights, backbone_weights, paper) as ``ModelInfo`` fields."""
    fixed = dict(fixed or {})
    signature = inspect.signature(builder)
    resolved: dict[str, Any] = {}
    for pname, param in signature.parameters.items():
        if pname == "num_classes" or param.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        if pname in fixed:
            continue
        resolved[pname] = param.default
    for key, value in (defaults or {}).items():
        if key not in resolved:
            raise ModelError(f"preset {name!r}: default for unknown option {key!r}")
        resolved[key] = value
    return _Entry(info=ModelInfo(name=name, defaults=resolved, **meta), builder=builder,
                  fixed=fixed)


def did_you_mean(name: str) -> str:
    """`` Did you mean a, b?`` for the registered names closest to ``name`` ('' if none)."""
    close = difflib.get_close_matches(name, _REGISTRY, n=3)
    return f" Did you mean {', '.join(close)}?" if close else ""


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY and (resolved := _resolve(name)) is not None:
        return resolved
    if name not in _REGISTRY:
        hint = did_you_mean(name)
        raise ModelError(
            f"unknown model {name!r}.{hint} Run `seglab models list` to see all "
            f"{len(_REGISTRY)} models."
        )
    return _REGISTRY[name]


def model_info(name: str) -> ModelInfo:
    """The ``ModelInfo`` of one registered model (ModelError when unknown)."""
    return _entry(name).info


def list_models(family: str | None = None) -> list[ModelInfo]:
    """Every registered model (optionally one family), sorted by family then name.

    Dynamic families (``smp:<arch>/<encoder>``, ``hf:<type>``) are shown by their examples,
    every one buildable; a family whose optional package is missing is left out (see
    ``model_families`` for why).
    """
    infos = [e.info for e in _REGISTRY.values()]
    for prefix, fam in _FAMILIES.items():
        if family is not None and family != prefix:
            continue
        try:
            infos += [_resolve(example).info for example in fam.examples]
        except ModelError:
            continue
    if family is not None:
        infos = [i for i in infos if i.family == family]
    return sorted(infos, key=lambda i: (i.family, i.name))


def model_families() -> list[dict[str, str | None]]:
    """The dynamic families: prefix, name pattern, description, and ``unavailable`` (None, or
    why its names cannot be built here, e.g. the optional package to install)."""
    rows: list[dict[str, str | None]] = []
    for prefix, fam in sorted(_FAMILIES.items()):
        try:
            for example in fam.examples:
                _resolve(example)
            problem = None
        except ModelError as exc:
            problem = str(exc)
        rows.append({"prefix": prefix, "pattern": fam.pattern, "description": fam.description,
                     "unavailable": problem})
    return rows


def model_names() -> list[str]:
    """Names of every registered model, sorted (dynamic family names are not enumerable)."""
    return sorted(_REGISTRY)


def build_model(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Build the registered model ``name`` for ``num_classes`` classes.

    The model takes a normalised float batch ``[N, 3, H, W]`` (any H, W) and returns
    ``{"out": logits [N, num_classes, H, W], "aux": ...}`` ("aux" only when the model's
    auxiliary head is enabled). ``model.seglab_spec`` records how to rebuild it (every
    option, defaults included).
    """
    entry = _entry(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ModelError(f"num_classes must be a positive integer, got {num_classes!r}")
    allowed = entry.info.defaults
    for key, value in options.items():
        if key in entry.fixed:
            if value != entry.fixed[key]:
                raise ModelError(
                    f"model {name!r} is a preset with {key}={entry.fixed[key]!r}; to use "
                    f"{key}={value!r} build the generic {entry.info.family!r} model instead"
                )
            continue
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ModelError(f"model {name!r} has no option {key!r} (options: {known})")
    kwargs = {k: v for k, v in allowed.items()}
    kwargs.update({k: v for k, v in options.items() if k not in entry.fixed})
    kwargs.update(entry.fixed)
    try:
        model = entry.builder(num_classes, **kwargs)
    except (TypeError, ValueError) as exc:  # an option of the wrong type or out of range
        given = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "default options"
        raise ModelError(f"cannot build model {name!r} with {given}: {exc}") from exc
    # A builder that read options from elsewhere (a checkpoint's config) reports them here,
    # so the spec rebuilds the same architecture without that source.
    kwargs.update(getattr(model, "seglab_resolved_options", {}))
    # The spec records every option, defaults included, so a saved model keeps its
    # architecture even if a later version changes a default.
    spec_options = {k: _json_safe_default(v) for k, v in kwargs.items() if k not in entry.fixed}
    try:
        json.dumps(spec_options)
    except TypeError as exc:
        raise ModelError(
            f"options for {name!r} must be JSON-safe (numbers, strings, lists): {exc}"
        ) from exc
    model.seglab_spec = {"name": name, "num_classes": num_classes, "options": spec_options}
    if not hasattr(model, "aux_weight"):
        model.aux_weight = None
    return model


def rebuild_spec(spec: dict[str, Any], *, drop_weights: bool = True) -> nn.Module:
    """Rebuild a model from ``model.seglab_spec``; by default without loading initial weights."""
    try:
        name, num_classes, options = spec["name"], spec["num_classes"], dict(spec["options"])
    except (KeyError, TypeError) as exc:
        raise ModelError(f"model spec {spec!r} lacks 'name', 'num_classes' or 'options'") from exc
    if drop_weights:
        for key in WEIGHT_OPTIONS:
            options.pop(key, None)
    return build_model(name, num_classes, **options)


def split_model_entry(entry: str, *, typed: bool = True) -> tuple[str, dict[str, Any]]:
    """``"deeplabv3_resnet101:aux=true,output_stride=8"`` -> ``(name, {"aux": True, ...})``.

    A family name keeps its own colon (``smp:unet/resnet34:encoder_depth=4``). With ``typed``
    values are read as YAML scalars (``true``, ``8``); without, they stay text (a recipe
    override reads them later).
    """
    name, _, rest = entry.partition(":")
    if name in _FAMILIES:
        inner, _, rest = rest.partition(":")
        name = f"{name}:{inner}"
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not eq or not key:
            raise ConfigError(f"model entry {entry!r}: options must read key=value, got {item!r}")
        if not typed:
            options[key] = raw
            continue
        try:
            options[key] = load_yaml(raw, f"model entry {short_text(entry)}")
        except YamlTooLarge:
            raise
        except ConfigError:
            options[key] = raw
    return name, options
