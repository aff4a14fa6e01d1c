"""Videos for ``predict_paths``: an overlay video with the source's size and frame rate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seglab.class_ids import class_ids
from seglab.errors import DataError
from seglab.io_utils import atomic_path
from seglab.predict.inputs import InputFile
from seglab.predict.predictor import Predictor
from seglab.predict.writers import OutputWriter, shares
from seglab.viz import overlay


def frame_count(path: Path) -> int | None:
    import av  # lazy: the optional video extra, absent in a base install

    try:
        with av.open(str(path)) as container:
            frames = container.streams.video[0].frames if container.streams.video else 0
    except (av.error.FFmpegError, OSError):
        return None
    return frames or None


def predict_video(
    predictor: Predictor,
    item: InputFile,
    writer: OutputWriter,
    advance: Callable[[int], None],
) -> dict[str, Any]:
    """Overlay video ``video/<name>.mp4`` with the same size, frame count and frame rate."""
    import av  # lazy: the optional video extra, absent in a base install

    target = writer.out_dir / "video" / f"{item.name}.mp4"
    counts = np.zeros(predictor.num_classes, dtype=np.int64)
    frames = 0
    try:
        with av.open(str(item.path)) as source:
            if not source.streams.video:
                raise DataError(f"{item.path}: no video stream")
            stream = source.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or 30
            with atomic_path(target) as tmp, av.open(str(tmp), "w", format="mp4") as sink:
                encoder = None
                batch: list[np.ndarray] = []

                def flush() -> None:
                    nonlocal encoder, frames
                    tensors = [torch.from_numpy(f).permute(2, 0, 1) for f in batch]
                    for rgb, probs in zip(batch, predictor.probabilities(tensors), strict=True):
                        mask = class_ids(probs, 0).cpu().numpy()
                        counts[:] += np.bincount(mask.ravel(), minlength=len(counts))[: len(counts)]
                        blended = _overlay(rgb, mask, writer)
                        if encoder is None:
                            encoder = _video_encoder(sink, rate, rgb.shape[1], rgb.shape[0])
                        frame = av.VideoFrame.from_ndarray(blended, format="rgb24")
                        for packet in encoder.encode(frame):
                            sink.mux(packet)
                    frames += len(batch)
                    advance(len(batch))
                    batch.clear()

                for frame in source.decode(stream):
                    batch.append(frame.to_ndarray(format="rgb24"))
                    if len(batch) >= predictor.batch_size:
                        flush()
                if batch:
                    flush()
                if encoder is None:
                    raise DataError(f"{item.path}: the video has no frames")
                for packet in encoder.encode():
                    sink.mux(packet)
    except av.error.FFmpegError as exc:
        raise DataError(f"{item.path}: cannot decode video ({exc})") from exc
    return {
        "input": str(item.path),
        "kind": "video",
        "frames": frames,
        "fps": float(rate),
        "outputs": {"video": str(target)},
        "class_shares": shares(counts, predictor.classmap),
    }


def _overlay(rgb: np.ndarray, mask: np.ndarray, writer: OutputWriter) -> np.ndarray:
    return overlay(rgb, mask, writer.palette, writer.alpha, writer.classmap.ignore_index)


def _video_encoder(sink: Any, rate: Any, width: int, height: int) -> Any:
    import av  # lazy: the optional video extra, absent in a base install

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    stream = sink.add_stream(codec, rate=rate)
    stream.width, stream.height = width, height
    # 4:2:0 (what every player reads) needs even sizes; odd sizes keep full chroma instead.
    stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    return stream
