"""Load the published weights of a real-time network (its authors' key names) into seglab's.

Each architecture declares a ``KeyMap``: groups of ``(authors' prefix, seglab prefix)``. The
tensors under one authors' prefix map, in order, onto seglab's tensors under its prefix (both
sides define the same layers in the same order); every pair must agree on the tensor's kind
(``weight``, ``bias``, ``running_var``...) and shape. A tensor of the file that no group claims
and no ``ignore`` prefix accounts for is an error naming it, as is a seglab tensor left without
a value: loading is strict. Checkpoints saved by seglab itself (seglab's own key names) load
by name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from seglab.errors import ModelError
from seglab.models.weights import read_state_dict

# Wrappers training code leaves on every key: DataParallel's "module.", a training wrapper's
# "model." (PIDNet/DDRNet's FullModel, whose loss buffers sit beside the model).
_WRAPPER_PREFIXES = ("module.", "model.")
_LOSS_MARKERS = ("loss", "criterion")


@dataclass(frozen=True)
class KeyMap:
    """How an architecture's published checkpoints name their tensors.

    ``groups``: ``(authors' prefix, seglab prefix)`` pairs, each a run of layers defined in the
    same order on both sides. ``ignore``: authors' prefixes seglab has no use for (an unused
    ImageNet classifier). ``optional``: authors' prefixes of heads seglab builds only on request
    (auxiliary heads); dropped when the model lacks them. ``transform``: a function of the
    unwrapped state dict run first (aliases, reparametrised weights).
    """

    groups: tuple[tuple[str, str], ...]
    ignore: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    transform: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None


def _unwrap(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _WRAPPER_PREFIXES:
        wrapped = [k for k in state if k.startswith(prefix)]
        if wrapped and len(wrapped) == len(state):
            state = {k[len(prefix):]: v for k, v in state.items()}
        elif wrapped and prefix == "model.":
            # the model beside its loss module: keep the model, drop the loss buffers only
            others = [k for k in state if not k.startswith(prefix)]
            if all(any(m in k.split(".")[0] for m in _LOSS_MARKERS) for k in others):
                state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _group_of(key: str, prefixes: list[str]) -> str | None:
    """The longest of ``prefixes`` that ``key`` starts with."""
    best = None
    for prefix in prefixes:
        if key.startswith(prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return best


def convert_state(state: dict[str, torch.Tensor], model: nn.Module, keymap: KeyMap, *,
                  source: str) -> dict[str, torch.Tensor]:
    """``state`` (authors' names, any wrapper) as a complete state dict of ``model``."""
    own = model.state_dict()
    state = _unwrap(dict(state))
    if set(state) == set(own):  # a seglab state dict
        return state
    if keymap.transform is not None:
        state = keymap.transform(state)
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    theirs_prefixes = [t for t, _ in keymap.groups]
    ours_of = dict(keymap.groups)
    ours_prefixes = list(ours_of.values())
    theirs_by_group: dict[str, list[str]] = {t: [] for t in theirs_prefixes}
    for key in state:
        group = _group_of(key, theirs_prefixes)
        if group is None:
            if key.startswith(keymap.ignore):
                continue
            raise ModelError(
                f"weights from {source}: tensor {key!r} matches no layer of this model (is it "
                "a checkpoint of this architecture, with these options?)"
            )
        theirs_by_group[group].append(key)
    ours_by_group: dict[str, list[str]] = {o: [] for o in ours_prefixes}
    for key in own:
        group = _group_of(key, ours_prefixes)
        if group is not None and not key.endswith("num_batches_tracked"):
            ours_by_group[group].append(key)
    converted: dict[str, torch.Tensor] = {}
    for theirs_prefix, ours_prefix in keymap.groups:
        theirs, ours = theirs_by_group[theirs_prefix], ours_by_group[ours_prefix]
        if not ours and theirs and theirs_prefix in keymap.optional:
            continue  # an auxiliary head this model was built without
        for i, key in enumerate(theirs):
            if i >= len(ours):
                raise ModelError(f"weights from {source}: tensor {key!r} has no counterpart in "
                                 f"this model (after {ours_prefix}*: {len(ours)} tensors)")
            target, tensor = ours[i], state[key]
            if key.rsplit(".", 1)[-1] != target.rsplit(".", 1)[-1] or \
                    tensor.shape != own[target].shape:
                raise ModelError(
                    f"weights from {source}: tensor {key!r} {tuple(tensor.shape)} does not fit "
                    f"{target!r} {tuple(own[target].shape)} (check the model's options)"
                )
            converted[target] = tensor
    missing = [k for k in own if k not in converted and not k.endswith("num_batches_tracked")]
    if missing:
        raise ModelError(f"weights from {source} leave {len(missing)} tensors of this model "
                         f"without a value, the first {missing[0]!r} (check the model's options)")
    for key, value in own.items():
        converted.setdefault(key, value)  # num_batches_tracked: training bookkeeping only
    return converted


def load_authors_weights(model: nn.Module, path: str | os.PathLike, keymap: KeyMap) -> None:
    """Load a local weight file (the authors' checkpoint or seglab's own) into ``model``.

    Read with ``weights_only=True``; a wrong file is a ModelError naming the first tensor that
    does not fit. Float tensors are cast to the model's dtype.
    """
    source = os.fspath(path)
    state = convert_state(read_state_dict(path), model, keymap, source=source)
    own = model.state_dict()
    for key, tensor in state.items():
        if tensor.is_floating_point() != own[key].is_floating_point():
            raise ModelError(f"weights from {source}: tensor {key!r} is "
                             f"{tensor.dtype}, the model's is {own[key].dtype}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # a seglab state dict of other shapes (another class count)
        detail = " ".join(str(exc).split())  # torch's message spans lines: keep one
        raise ModelError(f"weights from {source} do not fit this model: {detail}") from exc


def maybe_load(model: nn.Module, weights: str | os.PathLike | None, keymap: KeyMap) -> nn.Module:
    """``model`` with ``weights`` (a local file) loaded when given; the builders' last step."""
    if weights is not None:
        if not isinstance(weights, (str, os.PathLike)):
            raise ModelError(f"weights must be a path to a local file, got {weights!r}")
        load_authors_weights(model, weights, keymap)
    return model
