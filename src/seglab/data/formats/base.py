"""What every format adapter shares: ``DataSource``, options, the registry, file pairing.

An adapter is a function ``(root: Path, opts: Options) -> DataSource`` registered under its
spec prefix with ``@register_format("<name>")``; ``open_source("<name>:PATH")`` finds it in
``FORMATS``, checks the folder, runs it, rejects unknown options and (``strict``) layout
problems. The helpers below (``list_images``, ``match_by_stem``, ``read_list``,
``seeded_split``) are what most layouts are built from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seglab.data.classes import ClassMap
from seglab.data.dataset import Pair, SegmentationDataset
from seglab.data.masks import MaskDecoder
from seglab.data.splits import random_split
from seglab.data.transforms import JointTransform
from seglab.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SPLIT_NAMES = ("train", "val", "test")
# Suffixes that mask file names add to the image stem in the common layouts.
MASK_STEM_SUFFIXES = ("_gtFine_labelIds", "_mask", "_masks", "_label", "_labels", "_gt", "_L", "_P")
# Accepted by every format (used by the layouts that need a random split).
COMMON_OPTIONS = ("seed", "val_fraction", "test_fraction")


@dataclass
class DataSource:
    """A dataset on disk, resolved: classes, decoder and pairs per split."""

    format: str
    root: Path
    layout: str
    decoder: MaskDecoder
    splits: dict[str, list[Pair]]
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def classmap(self) -> ClassMap:
        return self.decoder.classmap

    @property
    def spec(self) -> str:
        return f"{self.format}:{self.root}"

    def join_splits(self, name: str) -> None:
        """Add split ``name`` when it joins existing splits with ``+`` (``"train+val"``: train
        on both, as for a final model once the recipe is chosen); a missing part is an error
        naming the splits there are."""
        if "+" not in name or name in self.splits:
            return
        parts = [part.strip() for part in name.split("+")]
        missing = [part for part in parts if part not in self.splits]
        if missing or len(set(parts)) != len(parts):
            raise DataError(
                f"{self.spec}: cannot make split {name!r}: "
                + (f"no split {', '.join(map(repr, missing))}" if missing else "a part repeats")
                + f"; splits: {', '.join(self.splits) or 'none'}"
            )
        self.splits[name] = [pair for part in parts for pair in self.splits[part]]

    def dataset(
        self, split: str = "train", transform: JointTransform | None = None
    ) -> SegmentationDataset:
        """The ``SegmentationDataset`` of one split."""
        if split not in self.splits:
            raise DataError(
                f"{self.spec} has no split {split!r}; splits: {', '.join(self.splits) or 'none'}"
            )
        return SegmentationDataset(
            self.splits[split], self.decoder, transform, f"{self.spec}/{split}"
        )


class Options:
    """Typed access to adapter options; unknown names are an error listing the known ones."""

    def __init__(self, fmt: str, raw: dict[str, Any]) -> None:
        self.fmt = fmt
        self.raw = dict(raw)
        self.used: set[str] = set()

    def _get(self, name: str, default: Any) -> Any:
        self.used.add(name)
        return self.raw.get(name, default)

    def get_str(self, name: str, default: str | None = None, choices: tuple[str, ...] = ()) -> Any:
        value = self._get(name, default)
        value = None if value is None else str(value)
        if choices and value not in choices:
            raise ConfigError(f"{self.fmt} option {name}={value!r}: choose one of {choices}")
        return value

    def get_int(self, name: str, default: int) -> int:
        value = self._get(name, default)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.fmt} option {name}={value!r} is not an integer") from None

    def get_float(self, name: str, default: float) -> float:
        value = self._get(name, default)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.fmt} option {name}={value!r} is not a number") from None

    def get_bool(self, name: str, default: bool) -> bool:
        value = self._get(name, default)
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{self.fmt} option {name}={value!r} is not true/false")

    def check_unused(self) -> None:
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            raise ConfigError(
                f"unknown {self.fmt} option(s) {', '.join(unknown)}; known: "
                + ", ".join(sorted(self.used))
            )


# --- the registry ----------------------------------------------------------------------------

Adapter = Callable[[Path, Options], DataSource]


@dataclass(frozen=True)
class Format:
    """A registered layout: its adapter, and whether it may create a missing root (synthetic)."""

    name: str
    adapter: Adapter
    creates_root: bool = False


# Filled by the format modules as ``seglab.data.formats`` imports them.
FORMATS: dict[str, Format] = {}


def register_format(name: str, *, creates_root: bool = False) -> Callable[[Adapter], Adapter]:
    """Decorator: make ``adapter`` the reader of ``"<name>:PATH"`` specs."""

    def decorate(adapter: Adapter) -> Adapter:
        if name in FORMATS:
            raise ConfigError(f"data format {name!r} is registered twice")
        FORMATS[name] = Format(name, adapter, creates_root)
        return adapter

    return decorate


def parse_spec(spec: str) -> tuple[str, Path]:
    """``"camvid:/data/CamVid"`` -> ``("camvid", Path("/data/CamVid"))``."""
    fmt, sep, path = spec.partition(":")
    if not sep or fmt not in FORMATS:
        raise ConfigError(
            f"data spec {spec!r}: expected '<format>:<path>' with format one of "
            f"{', '.join(FORMATS)} (e.g. camvid:/data/CamVid)"
        )
    return fmt, Path(path).expanduser()


def open_source(spec: str, *, strict: bool = True, **options: Any) -> DataSource:
    """Open a dataset from a spec string such as ``"camvid:PATH"`` or ``"cityscapes:PATH"``.

    Args:
        spec: ``"<format>:<path>"``, format one of ``FORMATS`` (``folder, camvid, voc,
            cityscapes, suim, synthetic``).
        strict: raise ``DataError`` on layout problems (an image without a mask, a list entry
            without files); with ``strict=False`` they are kept in ``DataSource.problems``.
        **options: adapter options, e.g. ``classes=19`` (cityscapes), ``keep_void=True``,
            ``seed=0``, ``val_fraction=0.15``, ``mask="color"`` (folder).
    """
    fmt, root = parse_spec(spec)
    entry = FORMATS[fmt]
    if not entry.creates_root and not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    if not entry.creates_root and not any(root.iterdir()):
        raise DataError(f"dataset folder is empty: {root}")
    opts = Options(fmt, options)
    opts.used.update(COMMON_OPTIONS)
    source = entry.adapter(root, opts)
    opts.check_unused()
    source.options = dict(options)
    if not any(source.splits.values()) and not source.problems:
        source.problems.append(f"{root}: no image/mask pairs found")
    if strict and source.problems:
        shown = "\n  ".join(source.problems[:10])
        more = f"\n  ... and {len(source.problems) - 10} more" if len(source.problems) > 10 else ""
        raise DataError(
            f"{spec}: {len(source.problems)} problem(s) in the layout:\n  {shown}{more}\n"
            "(run `seglab data check` for the full list)"
        )
    return source


def load_dataset(
    spec: str, split: str = "train", transform: JointTransform | None = None, **options: Any
) -> SegmentationDataset:
    """Shortcut: ``open_source(spec, **options).dataset(split, transform)``."""
    return open_source(spec, **options).dataset(split, transform)


# --- helpers for the adapters ----------------------------------------------------------------


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted, hidden files skipped."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _mask_keys(stem: str) -> list[str]:
    keys = [stem]
    keys += [stem[: -len(s)] for s in MASK_STEM_SUFFIXES if stem.endswith(s) and len(stem) > len(s)]
    return keys


def match_by_stem(
    images: list[Path], masks: list[Path], where: str
) -> tuple[list[Pair], list[str]]:
    """Pair images and masks by stem (mask stems may add ``_mask``, ``_L``, ``_P``...)."""
    by_stem: dict[str, Path] = {}
    problems: list[str] = []
    for image in images:
        if image.stem in by_stem:
            problems.append(
                f"two images share the stem {image.stem!r}: {by_stem[image.stem]}, {image}"
            )
        by_stem[image.stem] = image
    paired: dict[str, Path] = {}
    for mask in masks:
        stem = next((k for k in _mask_keys(mask.stem) if k in by_stem), None)
        if stem is None:
            problems.append(f"mask without image: {mask}")
        elif stem in paired:
            problems.append(f"two masks for image {by_stem[stem]}: {paired[stem]}, {mask}")
        else:
            paired[stem] = mask
    for stem, image in by_stem.items():
        if stem not in paired:
            problems.append(f"image without mask: {image}")
    pairs = [(by_stem[s], paired[s]) for s in sorted(paired)]
    if not pairs and not problems:
        problems.append(f"no image/mask pairs in {where}")
    return pairs, problems


def first_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    """The first of ``root/<name>`` that is a folder, or None."""
    return next((root / n for n in names if (root / n).is_dir()), None)


def read_list_text(path: Path) -> str:
    """A split list's text: UTF-8 (BOM or not) or UTF-16 with its BOM; else a DataError."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read split list {path}: {exc.strerror or exc}") from None
    encoding = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"split list {path} is not UTF-8 text (line {line}): save it as "
                        "UTF-8, one file name per line") from None


def list_entry_name(line: str) -> str:
    """The image name a split-list line means: the whole line (spaces and dots kept), or the
    first of two whitespace-separated image paths ('image mask'); folder and a known image
    suffix removed (``street 1`` stays ``street 1``, ``2021.05.00`` stays ``2021.05.00``)."""
    text = line.strip()
    parts = text.split()
    if len(parts) == 2 and all(Path(p).suffix.lower() in IMAGE_SUFFIXES for p in parts):
        text = parts[0]
    name = text.replace("\\", "/").rsplit("/", 1)[-1]
    suffix = Path(name).suffix
    return name[: -len(suffix)] if suffix.lower() in IMAGE_SUFFIXES else name


def read_list(path: Path) -> list[str]:
    """Image names (stems) from a split list: one name/path per line, or 'image mask' per
    line. UTF-8, UTF-8 with a BOM, UTF-16 with its BOM and CRLF line ends are read; a list
    naming nothing is an error (an empty val.txt would silently train without validation)."""
    names = [list_entry_name(line) for line in read_list_text(path).splitlines() if line.strip()]
    if not names:
        raise DataError(f"split list {path} names no images: list one image per line, or "
                        "delete the file")
    return names


def seeded_split(
    pairs: list[Pair], opts: Options, notes: list[str], why: str
) -> dict[str, list[Pair]]:
    """Random train/val/test split from the common options, recorded in ``notes``."""
    seed = opts.get_int("seed", 0)
    val_f, test_f = opts.get_float("val_fraction", 0.15), opts.get_float("test_fraction", 0.15)
    splits = random_split(pairs, val_f, test_f, seed)
    sizes = "/".join(str(len(splits.get(s, []))) for s in SPLIT_NAMES)
    notes.append(
        f"{why}: random train/val/test split {sizes} (seed={seed}, val_fraction={val_f},"
        f" test_fraction={test_f})"
    )
    return splits
