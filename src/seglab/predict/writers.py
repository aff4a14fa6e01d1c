"""What ``predict_paths`` writes per image: masks, colour masks, overlays, probabilities."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from seglab.class_ids import class_ids
from seglab.data.classes import ClassMap
from seglab.errors import ConfigError, SeglabError
from seglab.io_utils import atomic_path
from seglab.predict.inputs import InputFile
from seglab.viz import colorize, overlay

SAVE_KINDS = ("mask", "color", "overlay", "proba")
DEFAULT_SAVE = ("mask", "color", "overlay")


def parse_save(save: str | Iterable[str]) -> tuple[str, ...]:
    """``"mask,color"`` -> ``("mask", "color")``, checked against :data:`SAVE_KINDS`."""
    kinds = [s.strip() for s in (save.split(",") if isinstance(save, str) else save)]
    kinds = [k for k in kinds if k]
    unknown = [k for k in kinds if k not in SAVE_KINDS]
    if unknown or not kinds:
        raise ConfigError(
            f"cannot save {', '.join(unknown) or 'nothing'}: choose from {', '.join(SAVE_KINDS)}"
        )
    return tuple(dict.fromkeys(kinds))


class OutputWriter:
    """Writes the selected outputs of one prediction, in worker threads, atomically."""

    def __init__(
        self, classmap: ClassMap, out_dir: Path, kinds: Sequence[str], alpha: float
    ) -> None:
        self.classmap = classmap
        self.palette = classmap.palette()
        self.out_dir = out_dir
        self.kinds = kinds
        self.alpha = alpha
        self._futures: deque[Future] = deque()
        self._max_pending = 8  # bounds memory when encoding is slower than inference

    def write_image(
        self, item: InputFile, image: Tensor, probs: Tensor, pool: ThreadPoolExecutor
    ) -> dict[str, Any]:
        mask = class_ids(probs, 0).cpu().numpy()
        proba = probs.to(torch.float16).cpu().numpy() if "proba" in self.kinds else None
        outputs = {kind: self.path(kind, item.name) for kind in self.kinds}
        rgb = image.permute(1, 2, 0).numpy()
        while len(self._futures) >= self._max_pending:
            self._settle(self._futures.popleft())
        self._futures.append(pool.submit(self._write, outputs, rgb, mask, proba))
        return {
            "input": str(item.path),
            "kind": "image",
            "size": [int(mask.shape[0]), int(mask.shape[1])],
            "outputs": {kind: str(path) for kind, path in outputs.items()},
            "class_shares": class_shares(mask, self.classmap),
        }

    def path(self, kind: str, name: str) -> Path:
        suffix = {"mask": ".png", "color": ".png", "overlay": ".png", "proba": ".npz"}[kind]
        return self.out_dir / kind / f"{name}{suffix}"

    def _write(
        self, outputs: dict[str, Path], rgb: np.ndarray, mask: np.ndarray, proba: np.ndarray | None
    ) -> None:
        for kind, path in outputs.items():
            if kind == "mask":
                write_png(
                    path, mask.astype(np.uint8 if self.palette.shape[0] <= 256 else np.uint16)
                )
            elif kind == "color":
                write_png(path, colorize(mask, self.palette, self.classmap.ignore_index))
            elif kind == "overlay":
                write_png(path, overlay(rgb, mask, self.palette, self.alpha))
            elif kind == "proba":
                with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                    np.savez_compressed(
                        handle, proba=proba, classes=np.asarray(self.classmap.names)
                    )

    def wait(self) -> None:
        """Finish every pending write; the first failure is raised (not a bad input)."""
        while self._futures:
            self._settle(self._futures.popleft())

    @staticmethod
    def _settle(future: Future) -> None:
        try:
            future.result()
        except OSError as exc:  # disk full, permissions: stop, this is no bad input
            raise SeglabError(f"cannot write {exc.filename or 'an output'}: {exc}") from exc


def write_png(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def class_shares(mask: np.ndarray, classmap: ClassMap) -> dict[str, float]:
    """Share of pixels per class name (all classes, summing to 1 over predicted pixels)."""
    counts = np.bincount(mask.ravel(), minlength=classmap.num_classes)[: classmap.num_classes]
    return shares(counts, classmap)


def shares(counts: np.ndarray, classmap: ClassMap) -> dict[str, float]:
    total = max(int(counts.sum()), 1)
    return {name: round(int(c) / total, 6) for name, c in zip(classmap.names, counts, strict=True)}
