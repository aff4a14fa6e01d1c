"""Reading weight files safely and fetching named weights with a clear offline message."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from seglab.errors import ModelError


def aligned(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies of the tensors whose storage is not 64-byte aligned.

    safetensors hands out views at arbitrary offsets of one buffer; CPU kernels take other
    (slower, differently rounded) paths for unaligned weights, so outputs would not match
    the saved model bit for bit.
    """
    return {k: v if v.data_ptr() % 64 == 0 else v.clone() for k, v in state.items()}


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, never unpickling objects.

    Torch files saved as ``{"state_dict": ...}`` or ``{"model": ...}`` (common checkpoint
    layouts) are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weight file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            state = aligned(load_file(str(path)))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle with objects, wrong format...
        raise ModelError(f"cannot read weight file {path}: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"weight file {path} does not hold a state dict of tensors")
    return state


def hub_checkpoint_path(url: str) -> Path:
    """Where torch hub caches the file of ``url`` (``$TORCH_HOME/hub/checkpoints/<file>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def fetch_state_dict(url: str, *, what: str, option: str) -> dict[str, torch.Tensor]:
    """Load the weights at ``url`` from the torch hub cache, downloading when missing.

    ``what`` names the weights in messages; ``option`` is the build option a user can set to a
    local file instead (e.g. ``weights``). A failed download says which file to put where.
    """
    target = hub_checkpoint_path(url)
    if not target.is_file():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(target), progress=False)
        except Exception as exc:
            raise ModelError(
                f"downloading {what} failed ({type(exc).__name__}: {exc}). Without internet, "
                f"download {url} elsewhere and place the file {target.name} in {target.parent}/ "
                f"(the torch hub checkpoints folder, see TORCH_HOME), or pass "
                f"{option}='/path/to/{target.name}' (a local state dict file)."
            ) from exc
    return read_state_dict(target)


def named_or_file(value: str, named: str, url: str, *, what: str,
                  option: str) -> tuple[dict[str, torch.Tensor], str]:
    """``(state dict, source)`` for ``option=value``: the named weight set or a local file."""
    if value == named:
        return fetch_state_dict(url, what=what, option=option), url
    if os.path.isfile(value):
        return read_state_dict(value), os.fspath(value)
    raise ModelError(
        f"{option}={value!r}: expected {named!r} or a path to an existing state dict file"
    )


def non_finite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors in ``state`` holding a NaN or an infinity."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not v.is_meta
            and not bool(torch.isfinite(v).all())]


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """ModelError naming ``source`` when any weight is NaN or infinite (a diverged training:
    such a model predicts one class everywhere, silently)."""
    bad = non_finite_tensors(state)
    if bad:
        floats = sum(1 for v in state.values()
                     if isinstance(v, torch.Tensor) and v.is_floating_point())
        raise ModelError(f"weights from {source}: {len(bad)} of {floats} tensors hold NaN or "
                         f"infinite values (e.g. {bad[0]}); the training that wrote them "
                         "diverged (lower optim.lr), refusing to load them")


def load_matching(
    module: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str, allow_missing=(),
    assign: bool = False,
) -> None:
    """Load ``state`` into ``module`` strictly, with a readable error listing the mismatches.

    ``allow_missing`` are key prefixes that may be absent from ``state`` (freshly initialised
    layers, e.g. a classifier replaced for another class count). ``assign=True`` makes the
    module use the given tensors (needed for a module built on the meta device), so their
    dtypes must be the module's (a float64 file would give a float64 model); without it a
    float tensor is cast to the module's float dtype, but never to or from an integer one.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(tuple(allow_missing))]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    wrong_dtype = [
        f"{k} is {str(state[k].dtype).removeprefix('torch.')}, the model's is "
        f"{str(v.dtype).removeprefix('torch.')}"
        for k, v in own.items()
        if k in state and state[k].dtype != v.dtype
        and (assign or state[k].is_floating_point() != v.is_floating_point())
    ]
    if missing or unexpected or wrong_shape or wrong_dtype:
        details = []
        if missing:
            details.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            details.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        if wrong_shape:
            details.append(f"shape mismatch {len(wrong_shape)} (e.g. {wrong_shape[0]})")
        if wrong_dtype:
            details.append(f"dtype mismatch {len(wrong_dtype)} (e.g. {wrong_dtype[0]}; save "
                           "the weights in the model's dtypes, e.g. after model.float())")
        raise ModelError(f"weights from {source} do not fit this model: {'; '.join(details)}")
    check_finite(state, source)
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False,
                           assign=assign)
