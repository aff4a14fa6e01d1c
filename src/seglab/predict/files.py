"""``predict_paths``: run a :class:`Predictor` over files, folders, globs and videos.

Writes masks / colour masks / overlays / probability maps atomically (see
:mod:`seglab.predict.writers`), reports unreadable files instead of stopping at the first one,
and tells a ``progress`` callback how far it got (the CLI draws a bar from it).
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from seglab.data.dataset import read_image
from seglab.errors import ConfigError, DataError, SeglabError
from seglab.io_utils import atomic_write_text, json_safe
from seglab.predict.inputs import InputFile, collect_inputs
from seglab.predict.predictor import Predictor
from seglab.predict.video import frame_count, predict_video
from seglab.predict.writers import DEFAULT_SAVE, OutputWriter, parse_save

SUMMARY_FILE = "summary.json"
Progress = Callable[[str, int, int | None], None]
"""``progress(task, done, total)``: ``task`` names the work (``"images"``, ``"video a.mp4"``),
``done`` counts finished images (frames for a video), ``total`` is None when unknown. It is
called once with ``done=0`` when a task starts."""


@dataclass
class PredictSummary:
    """What ``predict_paths`` did: one entry per input written, and the inputs it skipped."""

    out_dir: Path
    items: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        images = sum(1 for item in self.items if item["kind"] == "image")
        frames = sum(item.get("frames", 0) for item in self.items)
        return {
            "out_dir": str(self.out_dir),
            "num_images": images,
            "num_videos": len(self.items) - images,
            "num_video_frames": frames,
            "num_failed": len(self.failed),
            "seconds": round(self.seconds, 3),
            "items": self.items,
            "failed": self.failed,
        }


def predict_paths(
    predictor: Predictor,
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    save: str | Iterable[str] = DEFAULT_SAVE,
    alpha: float = 0.5,
    progress: Progress | None = None,
) -> PredictSummary:
    """Predict every image and video in ``inputs`` and write the results under ``out_dir``.

    Layout: ``mask/<name>.png`` (8-bit class ids, 16-bit above 256 classes),
    ``color/<name>.png`` (dataset palette), ``overlay/<name>.png`` (mask over the image with
    ``alpha``), ``proba/<name>.npz`` (``proba``: float16 ``[C, H, W]``, ``classes``), and
    ``video/<name>.mp4`` (overlay video) for each video. ``<name>`` keeps the path relative to
    an input folder. Unreadable files are listed in ``summary.failed`` and skipped.
    ``summary.json`` (:func:`write_summary`) is removed first and written last.
    ``progress`` (see :data:`Progress`) hears how far each task got.
    """
    kinds = parse_save(save)
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must lie in 0..1, got {alpha}")
    files = collect_inputs(inputs, exclude=out_dir)
    summary = PredictSummary(Path(out_dir))
    # No summary.json while outputs are being written: a folder without one is unfinished.
    if summary.out_dir.is_dir():
        (summary.out_dir / SUMMARY_FILE).unlink(missing_ok=True)
    started = time.perf_counter()
    images = [f for f in files if not f.is_video]
    videos = [f for f in files if f.is_video]
    frames = [frame_count(video.path) for video in videos]  # None where the file does not say
    # the first batch's shape is what a compile would be for: the images', else the videos'
    predictor.expect(len(images) if images else sum(count or 0 for count in frames))
    writer = OutputWriter(predictor.classmap, summary.out_dir, kinds, alpha)
    report = progress or _silent
    with ThreadPoolExecutor(max_workers=2) as pool:
        if images:
            task = _Task(report, "images", len(images))
            for item, result in _predict_images(predictor, images, pool):
                if isinstance(result, SeglabError):
                    summary.failed.append({"input": str(item.path), "error": str(result)})
                else:
                    image, probs = result
                    summary.items.append(writer.write_image(item, image, probs, pool))
                task.advance(1)
            writer.wait()
        for video, count in zip(videos, frames, strict=True):
            task = _Task(report, f"video {video.path.name}", count)
            try:
                summary.items.append(predict_video(predictor, video, writer, task.advance))
            except SeglabError as exc:
                summary.failed.append({"input": str(video.path), "error": str(exc)})
    summary.seconds = time.perf_counter() - started
    write_summary(summary)
    return summary


def write_summary(summary: PredictSummary) -> Path:
    """``<out>/summary.json``, written last and atomically: its presence says every output
    of the run was written (a killed run leaves none; running the command again completes
    the folder)."""
    path = summary.out_dir / SUMMARY_FILE
    try:
        atomic_write_text(path, json.dumps(json_safe(summary.to_dict()), indent=2) + "\n")
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _predict_images(
    predictor: Predictor, images: Sequence[InputFile], pool: ThreadPoolExecutor
) -> Iterator[tuple[InputFile, tuple[Tensor, Tensor] | SeglabError]]:
    """Decode ahead in threads, batch consecutive same-size images, yield per-image results."""
    pending: deque[tuple[InputFile, Future]] = deque()
    queue = iter(images)
    lookahead = 2 * predictor.batch_size

    def refill() -> None:
        while len(pending) < lookahead:
            item = next(queue, None)
            if item is None:
                return
            pending.append((item, pool.submit(read_input_image, item.path)))

    batch: list[tuple[InputFile, Tensor]] = []

    def flush() -> Iterator[tuple[InputFile, tuple[Tensor, Tensor]]]:
        probs = predictor.probabilities([image for _, image in batch])
        for (item, image), p in zip(batch, probs, strict=True):
            yield item, (image, p)
        batch.clear()

    refill()
    while pending:
        item, future = pending.popleft()
        refill()
        try:
            image = future.result()
        except SeglabError as exc:
            yield item, exc
            continue
        if batch and (
            tuple(image.shape) != tuple(batch[0][1].shape) or len(batch) >= predictor.batch_size
        ):
            yield from flush()
        batch.append((item, image))
    if batch:
        yield from flush()


def read_input_image(path: str | os.PathLike) -> Tensor:
    """The image ``predict_paths`` feeds the model: ``seglab.data.dataset.read_image``.

    Its promise is that a bad file is reported and skipped, so an unexpected exception from
    a decoder is turned into a ``DataError`` naming the file rather than ending the run
    (``read_image`` itself raises only ``DataError``; the decode tests hold it to that).
    """
    try:
        return read_image(path)
    except SeglabError:
        raise
    except Exception as exc:  # noqa: BLE001 - one bad input must not stop the others
        raise DataError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc


class _Task:
    """One line of progress: counts what is done and tells the callback."""

    def __init__(self, report: Progress, name: str, total: int | None) -> None:
        self.report, self.name, self.total, self.done = report, name, total, 0
        report(name, 0, total)

    def advance(self, count: int) -> None:
        self.done += count
        self.report(self.name, self.done, self.total)


def _silent(task: str, done: int, total: int | None) -> None:
    return None
