"""Multi-band TIFF / GeoTIFF images -> ``uint8 [C,H,W]`` tensors, any band count.

``read_tiff`` is what ``seglab.data.dataset.read_image`` uses for ``.tif`` / ``.tiff`` files.
It reads through ``tifffile`` (the ``geo`` extra), else ``rasterio`` when installed, else
Pillow (classic 8-bit grey/RGB/RGBA TIFFs only). Georeferencing is not used: a GeoTIFF is read
as its pixel array.

Bands:

- The axes stored in the file (band-interleaved ``YXS``, band-sequential ``SYX``, or a stack
  of single-band pages ``QYX``/``IYX``, one band per page) are turned into band-first
  ``[C,H,W]``.
- A band the TIFF marks as alpha (ExtraSamples 1 or 2) is dropped, as for RGBA PNGs.
- One band is repeated to three (as grey PNG/JPEG images are), so RGB models read it; two,
  three, four or more bands are kept as stored (``model.options.in_chans`` = that count).

Values (the same stored value gives the same byte in every file, so per-band statistics
stay comparable across a dataset):

- ``uint8``: as stored.
- other unsigned / non-negative integers: ``round(v * 255 / full_scale)``, clipped, where
  ``full_scale`` is the file's MaxSampleValue tag (281) when written (e.g. 4095 for 12-bit
  data kept in 16-bit files), else the type's maximum (``uint16``: 65535, i.e. ``v / 257``).
- floats whose finite values lie in 0..1 (reflectance): ``round(v * 255)``; NaN -> 0.
- negative integers or floats outside 0..1 (dB, elevation) are a ``DataError``: rescale such
  data to ``uint8`` / ``uint16`` or 0..1 first, with a rule that fits it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from seglab.errors import DataError

TIFF_SUFFIXES = (".tif", ".tiff")
_MAX_SAMPLE_VALUE = 281
_ALPHA_EXTRASAMPLES = (1, 2)  # associated, unassociated alpha


def is_tiff(path: str | Path) -> bool:
    """True for the file names ``read_tiff`` handles (``.tif`` / ``.tiff``)."""
    return Path(path).suffix.lower() in TIFF_SUFFIXES


def _band_first(array: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """Array with tifffile's series axes (``YX``, ``YXS``, ``SYX``, ``CYX``...) -> ``[C,H,W]``."""
    axes = axes.upper()
    # Leading length-1 axes (a single frame, a single plane) carry nothing.
    while array.ndim > 2 and axes and array.shape[0] == 1 and axes[0] not in "YX":
        array, axes = array[0], axes[1:]
    if axes == "YX":
        return array[None]
    if axes in ("YXS", "YXC"):
        return np.moveaxis(array, -1, 0)
    if len(axes) == 3 and axes[1:] == "YX" and axes[0] in "SCQIZ":
        return array  # samples/channels, or a stack of single-band pages: one band each
    raise DataError(
        f"{path}: TIFF with axes {axes!r} (shape {tuple(array.shape)}); seglab reads one image "
        "of bands x height x width (a multi-page or 3-D stack needs splitting into files)"
    )


_SEPARATED = 5  # TIFF PhotometricInterpretation of CMYK (ink separations)


def _cmyk_to_rgb(array: np.ndarray, path: Path) -> np.ndarray:
    """``[4,H,W]`` CMYK ink coverage -> ``uint8 [3,H,W]`` RGB (what Pillow's convert does)."""
    if array.dtype.kind != "u":
        raise DataError(f"{path}: CMYK TIFF with {array.dtype} samples: save it as RGB")
    scale = float(np.iinfo(array.dtype).max)
    ink = array.astype(np.float32) / scale
    rgb = (1.0 - ink[:3]) * (1.0 - ink[3:4])
    return np.round(rgb * 255.0).astype(np.uint8)


def _read_tifffile(path: Path) -> tuple[np.ndarray, float | None, set[int]]:
    import tifffile  # optional (seglab[geo]): _reader picks it only when installed

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        array = _band_first(series.asarray(), series.axes, path)
        page = tif.pages[0]
        tag = page.tags.get(_MAX_SAMPLE_VALUE)
        full_scale = None
        if tag is not None:
            value = np.asarray(tag.value).reshape(-1)
            full_scale = float(value.max()) if value.size else None
        extras = [int(v) for v in getattr(page, "extrasamples", ()) or ()]
        if int(getattr(page, "photometric", 0)) == _SEPARATED and array.shape[0] - len(extras) == 4:
            return _cmyk_to_rgb(array[:4], path), None, set()  # printing inks are not bands
    # ExtraSamples describe the last bands of a pixel (after the colour ones).
    first_extra = array.shape[0] - len(extras)
    alpha = {first_extra + i for i, kind in enumerate(extras) if kind in _ALPHA_EXTRASAMPLES}
    return array, full_scale, alpha


def _read_rasterio(path: Path) -> tuple[np.ndarray, float | None, set[int]]:
    import rasterio  # optional: _reader picks it only when installed

    with rasterio.open(path) as ds:
        array = ds.read()  # [bands, H, W]
        interp = [str(ci).lower() for ci in ds.colorinterp]
    return array, None, {i for i, ci in enumerate(interp) if ci.endswith("alpha")}


def _read_pillow(path: Path) -> tuple[np.ndarray, float | None, set[int]]:
    try:
        with Image.open(path) as im:
            mode = im.mode
            # CMYK / YCbCr are colour encodings, not four or three independent bands.
            array = np.asarray(im.convert("RGB") if mode in ("CMYK", "YCbCr") else im)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(
            f"{path}: Pillow cannot read this TIFF ({exc}); multi-band and 16-bit TIFFs need"
            " tifffile: pip install 'seglab[geo]'"
        ) from exc
    array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    return array, None, {3} if mode in ("RGBA", "LA") and array.shape[0] == 4 else set()


def _to_uint8(array: np.ndarray, full_scale: float | None, path: Path) -> np.ndarray:
    """The value rule of the module docstring."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        if array.size and int(array.min()) < 0:
            raise DataError(
                f"{path}: {array.dtype} TIFF with negative values (min {int(array.min())});"
                " seglab reads non-negative integers or 0..1 floats: rescale the bands first"
            )
        scale = full_scale or float(np.iinfo(array.dtype).max)
        out = np.rint(array.astype(np.float64) * (255.0 / scale))
        return np.clip(out, 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        finite = array[np.isfinite(array)]
        if finite.size and (finite.min() < 0 or finite.max() > 1):
            low, high = float(finite.min()), float(finite.max())
            raise DataError(
                f"{path}: float TIFF with values {low:.4g}..{high:.4g};"
                " seglab reads floats in 0..1 (reflectance) or integer TIFFs: rescale the"
                " bands first"
            )
        out = np.rint(np.nan_to_num(array.astype(np.float64), nan=0.0) * 255.0)
        return np.clip(out, 0, 255).astype(np.uint8)
    raise DataError(f"{path}: TIFF sample type {array.dtype} is not supported")


def _reader():
    try:
        import tifffile  # noqa: F401

        return _read_tifffile
    except ImportError:
        pass
    try:
        import rasterio  # noqa: F401

        return _read_rasterio
    except ImportError:
        return _read_pillow


def read_tiff_array(path: str | Path) -> np.ndarray:
    """Read a TIFF as ``uint8 [C,H,W]`` numpy (the rules of the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    try:
        array, full_scale, alpha = _reader()(path)
    except DataError:
        raise
    except (OSError, ValueError, KeyError, IndexError, RuntimeError) as exc:
        # tifffile raises TiffFileError (a ValueError) on damaged files.
        raise DataError(f"{path}: cannot decode TIFF ({type(exc).__name__}: {exc})") from exc
    if alpha:
        array = array[[i for i in range(array.shape[0]) if i not in alpha]]
    if array.ndim != 3 or array.shape[0] == 0 or 0 in array.shape[1:]:
        raise DataError(f"{path}: TIFF holds no image (shape {tuple(array.shape)})")
    array = _to_uint8(array, full_scale, path)
    if array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    return np.ascontiguousarray(array)


def read_tiff(path: str | Path) -> torch.Tensor:
    """Read a TIFF / GeoTIFF as a ``uint8 [C,H,W]`` tensor (C = bands, 1 band read as 3)."""
    return torch.from_numpy(read_tiff_array(path))


def tiff_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of a TIFF from its header, without decoding the pixels (tifffile)."""
    path = Path(path)
    try:
        import tifffile
    except ImportError:
        return tuple(read_tiff_array(path).shape[1:])  # type: ignore[return-value]
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape = series.axes.upper(), series.shape
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except (OSError, ValueError, IndexError) as exc:
        raise DataError(f"{path}: cannot read TIFF header ({type(exc).__name__}: {exc})") from exc
    if "Y" not in axes or "X" not in axes:
        raise DataError(f"{path}: TIFF with axes {axes!r} has no height/width")
    return int(shape[axes.index("Y")]), int(shape[axes.index("X")])

