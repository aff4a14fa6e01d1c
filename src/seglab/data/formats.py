"""On-disk layouts -> ``DataSource`` (class map, mask decoder, (image, mask) pairs per split).

``open_source("camvid:PATH")``; one small adapter per layout:

- ``folder``: ``images/`` + ``masks/`` matched by file stem, optional ``train/val/test``
  sub-folders or split lists, optional class table; index or colour masks auto-detected.
- ``camvid``: SegNet 11-class (``train.txt``...), 32-class colour ``*_L.png`` +
  ``label_colors.txt``, fastai ``codes.txt`` + ``*_P.png``, Kaggle ``class_dict.csv``.
- ``voc``: ``VOCdevkit/VOC2012`` (+ SBD ``train_aug.txt``) or a flat VOC-style folder.
- ``cityscapes``: ``leftImg8bit`` + ``gtFine/*_gtFine_labelIds.png``, ``classes=34|19|7``.
- ``suim``: SUIM bit-colour BMP masks -> 8 classes.
- ``synthetic``: a folder written by ``make_synthetic`` (generated there if missing).

Options come as keyword arguments (strings from the CLI are parsed: ``classes=19``,
``keep_void=true``). Layouts without a split get a seeded random split, reported in ``notes``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seglab.data.classes import (
    IGNORE_INDEX,
    ClassMap,
    TableRow,
    cityscapes_view,
    default_palette,
    read_class_table,
)
from seglab.data.dataset import Pair, SegmentationDataset
from seglab.data.masks import (
    MaskDecoder,
    color_decoder,
    index_decoder,
    read_mask_array,
)
from seglab.data.splits import random_split
from seglab.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SPLIT_NAMES = ("train", "val", "test")
# Suffixes that mask file names add to the image stem in the common layouts.
MASK_STEM_SUFFIXES = ("_gtFine_labelIds", "_mask", "_masks", "_label", "_labels", "_gt", "_L", "_P")
# Accepted by every format (used by the layouts that need a random split).
COMMON_OPTIONS = ("seed", "val_fraction", "test_fraction")
CLASS_TABLE_NAMES = (
    "classes.csv",
    "class_dict.csv",
    "label_colors.txt",
    "classes.txt",
    "codes.txt",
    "class_names.txt",
    "labels.txt",
)


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

    def dataset(self, split: str = "train", transform=None) -> SegmentationDataset:
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


# --- helpers ---------------------------------------------------------------------------------


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


def _first_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def _read_list(path: Path) -> list[str]:
    """Stems from a split list: one name/path per line, or 'image mask' per line."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DataError(f"cannot read split list {path}: {exc}") from exc
    return [Path(line.split()[0]).stem for line in lines if line.strip()]


def _seeded_split(pairs: list[Pair], opts: Options, notes: list[str], why: str) -> dict:
    seed = opts.get_int("seed", 0)
    val_f, test_f = opts.get_float("val_fraction", 0.15), opts.get_float("test_fraction", 0.15)
    splits = random_split(pairs, val_f, test_f, seed)
    sizes = "/".join(str(len(splits.get(s, []))) for s in SPLIT_NAMES)
    notes.append(
        f"{why}: random train/val/test split {sizes} (seed={seed}, val_fraction={val_f},"
        f" test_fraction={test_f})"
    )
    return splits


def _mask_kind(first_mask: Path, rows: list[TableRow] | None, requested: str) -> str:
    if requested != "auto":
        return requested
    raw = read_mask_array(first_mask)
    if raw.ndim == 2:
        return "index"
    if (raw[..., 0] == raw[..., 1]).all() and (raw[..., 0] == raw[..., 2]).all():
        return "index"
    if rows is None or any(r.color is None for r in rows):
        raise DataError(
            f"{first_mask} is an RGB colour mask but no class table with colours was found;"
            " add classes.csv (name,r,g,b per line) or label_colors.txt ('R G B<TAB>Name')"
        )
    return "color"


def _rows_from_masks(masks: list[Path], ignore_index: int) -> list[TableRow]:
    import numpy as np

    seen = np.zeros(256, dtype=bool)
    for mask in masks:
        raw = read_mask_array(mask)
        seen[np.unique(raw if raw.ndim == 2 else raw[..., 0])] = True
    seen[ignore_index] = False
    ids = np.flatnonzero(seen)
    n = int(ids.max()) + 1 if ids.size else 1
    pal = default_palette(n)
    return [TableRow(f"class_{i}", tuple(int(v) for v in pal[i])) for i in range(n)]


# --- adapters --------------------------------------------------------------------------------


def _folder(root: Path, opts: Options, fmt: str = "folder") -> DataSource:
    notes: list[str] = []
    problems: list[str] = []
    image_dir = _first_dir(root, ("images", "imgs", "JPEGImages"))
    mask_dir = _first_dir(root, ("masks", "labels", "annotations", "SegmentationClass"))
    if image_dir is None or mask_dir is None:
        raise DataError(
            f"{root}: expected images/ and masks/ folders (found: "
            f"{', '.join(sorted(p.name for p in root.iterdir())) or 'nothing'})"
        )
    splits: dict[str, list[Pair]] = {}
    sub_splits = [s for s in SPLIT_NAMES if (image_dir / s).is_dir()]
    all_masks: list[Path] = []
    if sub_splits:
        for split in sub_splits:
            masks = list_images(mask_dir / split)
            pairs, probs = match_by_stem(
                list_images(image_dir / split), masks, str(image_dir / split)
            )
            splits[split], all_masks = pairs, all_masks + masks
            problems += probs
        notes.append(f"splits from sub-folders: {', '.join(sub_splits)}")
    else:
        all_masks = list_images(mask_dir)
        pairs, problems = match_by_stem(list_images(image_dir), all_masks, str(image_dir))
        lists = {s: root / f"{s}.txt" for s in SPLIT_NAMES} | {
            s: root / "splits" / f"{s}.txt"
            for s in SPLIT_NAMES
            if (root / "splits" / f"{s}.txt").is_file()
        }
        lists = {s: p for s, p in lists.items() if p.is_file()}
        if lists:
            by_stem = {img.stem: (img, mask) for img, mask in pairs}
            for split, path in lists.items():
                stems = _read_list(path)
                missing = [s for s in stems if s not in by_stem]
                problems += [f"{path}: {s!r} has no image/mask pair" for s in missing[:20]]
                splits[split] = [by_stem[s] for s in stems if s in by_stem]
            notes.append(f"splits from lists: {', '.join(str(p.name) for p in lists.values())}")
        elif pairs:
            splits = _seeded_split(pairs, opts, notes, "no split on disk")
    if not all_masks:
        raise DataError(f"{mask_dir}: no mask files ({', '.join(IMAGE_SUFFIXES)})")

    ignore_index = opts.get_int("ignore_index", IGNORE_INDEX)
    keep_void = opts.get_bool("keep_void", False)
    table_opt = opts.get_str("classes")
    table = (
        Path(table_opt)
        if table_opt
        else next((root / n for n in CLASS_TABLE_NAMES if (root / n).is_file()), None)
    )
    rows = read_class_table(table) if table else None
    kind = _mask_kind(all_masks[0], rows, opts.get_str("mask", "auto", ("auto", "index", "color")))
    if rows is None:
        rows = _rows_from_masks(all_masks, ignore_index)
        notes.append(
            f"no class table: {len(rows)} classes inferred from mask values 0..{len(rows) - 1}"
            " (add classes.csv 'name,r,g,b' to name them)"
        )
    else:
        notes.append(f"class table: {table.name}")
    if kind == "color":
        decoder = color_decoder(rows, keep_void=keep_void, ignore_index=ignore_index)
    else:
        decoder = index_decoder(rows, keep_void=keep_void, ignore_index=ignore_index)
    return DataSource(
        fmt, root, f"folder/{kind}", decoder, splits, notes + list(decoder.notes), problems
    )


def _camvid(root: Path, opts: Options) -> DataSource:
    if (root / "train.txt").is_file() and (root / "trainannot").is_dir():
        return _camvid_segnet(root, opts)
    if (root / "class_dict.csv").is_file() and (root / "train_labels").is_dir():
        return _camvid_kaggle(root, opts)
    if (root / "label_colors.txt").is_file():
        return _camvid_colour(root, opts)
    if (root / "codes.txt").is_file():
        return _camvid_fastai(root, opts)
    raise DataError(
        f"{root}: not a known CamVid layout; expected train.txt + trainannot/ (SegNet 11-class),"
        " label_colors.txt + *_L.png (32-class), codes.txt + *_P.png (fastai) or class_dict.csv"
        " + train_labels/ (Kaggle)"
    )


CAMVID11 = [
    ("Sky", (128, 128, 128)),
    ("Building", (128, 0, 0)),
    ("Pole", (192, 192, 128)),
    ("Road", (128, 64, 128)),
    ("Pavement", (60, 40, 222)),
    ("Tree", (128, 128, 0)),
    ("SignSymbol", (192, 128, 128)),
    ("Fence", (64, 64, 128)),
    ("Car", (64, 0, 128)),
    ("Pedestrian", (64, 64, 0)),
    ("Bicyclist", (0, 128, 192)),
    ("Void", (0, 0, 0)),
]


def _camvid_segnet(root: Path, opts: Options) -> DataSource:
    keep_void = opts.get_bool("keep_void", False)
    decoder = index_decoder([TableRow(n, c) for n, c in CAMVID11], keep_void=keep_void)
    splits: dict[str, list[Pair]] = {}
    problems: list[str] = []
    for split in SPLIT_NAMES:
        listing = root / f"{split}.txt"
        if not listing.is_file():
            continue
        pairs = []
        for line_no, line in enumerate(listing.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                problems.append(f"{listing} line {line_no}: expected 'image annotation'")
                continue
            # The lists hold absolute paths from the authors' machine: keep folder + file name.
            image, mask = (root / Path(p).parent.name / Path(p).name for p in parts)
            missing = [p for p in (image, mask) if not p.is_file()]
            if missing:
                problems += [f"{listing} line {line_no}: file not found: {p}" for p in missing]
                continue
            pairs.append((image, mask))
        splits[split] = pairs
    notes = ["splits from train.txt/val.txt/test.txt (basenames of the listed paths)"]
    return DataSource(
        "camvid", root, "camvid/segnet-11", decoder, splits, notes + list(decoder.notes), problems
    )


def _camvid_colour(root: Path, opts: Options) -> DataSource:
    rows = read_class_table(root / "label_colors.txt")
    decoder = color_decoder(rows, keep_void=opts.get_bool("keep_void", False))
    image_dir = _first_dir(root, ("images", "701_StillsRaw_full", "raw"))
    label_dir = _first_dir(root, ("labels", "LabeledApproved_full", "label"))
    if image_dir is None or label_dir is None:
        raise DataError(f"{root}: expected images/ and labels/ beside label_colors.txt")
    pairs, problems = match_by_stem(list_images(image_dir), list_images(label_dir), str(root))
    notes: list[str] = []
    splits = _seeded_split(pairs, opts, notes, "no split in this layout")
    return DataSource(
        "camvid", root, "camvid/colour-32", decoder, splits, list(decoder.notes) + notes, problems
    )


def _camvid_fastai(root: Path, opts: Options) -> DataSource:
    rows = read_class_table(root / "codes.txt")
    decoder = index_decoder(rows, keep_void=opts.get_bool("keep_void", False))
    image_dir = _first_dir(root, ("images",))
    label_dir = _first_dir(root, ("labels",))
    if image_dir is None or label_dir is None:
        raise DataError(f"{root}: expected images/ and labels/ beside codes.txt")
    pairs, problems = match_by_stem(list_images(image_dir), list_images(label_dir), str(root))
    notes: list[str] = []
    if (root / "valid.txt").is_file():
        val_stems = set(_read_list(root / "valid.txt"))
        splits = {
            "train": [p for p in pairs if p[0].stem not in val_stems],
            "val": [p for p in pairs if p[0].stem in val_stems],
        }
        notes.append("val split from valid.txt")
    else:
        splits = _seeded_split(pairs, opts, notes, "no valid.txt")
    return DataSource(
        "camvid",
        root,
        "camvid/fastai-codes",
        decoder,
        splits,
        list(decoder.notes) + notes,
        problems,
    )


def _camvid_kaggle(root: Path, opts: Options) -> DataSource:
    rows = read_class_table(root / "class_dict.csv")
    decoder = color_decoder(rows, keep_void=opts.get_bool("keep_void", False))
    splits: dict[str, list[Pair]] = {}
    problems: list[str] = []
    for split in SPLIT_NAMES:
        if (root / split).is_dir():
            pairs, probs = match_by_stem(
                list_images(root / split), list_images(root / f"{split}_labels"), str(root / split)
            )
            splits[split], problems = pairs, problems + probs
    return DataSource(
        "camvid", root, "camvid/kaggle-class-dict", decoder, splits, list(decoder.notes), problems
    )


VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def _voc(root: Path, opts: Options) -> DataSource:
    base = next(
        (
            p
            for p in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root)
            if (p / "JPEGImages").is_dir()
        ),
        None,
    )
    if base is None or not (base / "SegmentationClass").is_dir():
        raise DataError(f"{root}: expected VOCdevkit/VOC2012 or JPEGImages/ + SegmentationClass/")
    table = base / "class_names.txt"
    rows = read_class_table(table) if table.is_file() else [TableRow(n, None) for n in VOC_CLASSES]
    rows = [
        TableRow(r.name, tuple(int(v) for v in default_palette(len(rows))[i]))
        for i, r in enumerate(rows)
    ]
    decoder = index_decoder(rows, keep_void=True)  # VOC's void is the 255 border, not a class
    notes = [f"{len(rows)} classes, palette index masks, 255 (object borders) -> ignore"]
    lists_dir = base / "ImageSets" / "Segmentation"
    problems: list[str] = []

    def pairs_for(stems: list[str], mask_dirs: list[Path], listing: Path) -> list[Pair]:
        pairs = []
        for stem in stems:
            image = base / "JPEGImages" / f"{stem}.jpg"
            mask = next(
                (d / f"{stem}.png" for d in mask_dirs if (d / f"{stem}.png").is_file()), None
            )
            if not image.is_file():
                problems.append(f"{listing}: image not found: {image}")
            elif mask is None:
                problems.append(f"{listing}: image without mask: {image}")
            else:
                pairs.append((image, mask))
        return pairs

    splits: dict[str, list[Pair]] = {}
    if lists_dir.is_dir():
        for split in ("train", "val"):
            if (lists_dir / f"{split}.txt").is_file():
                splits[split] = pairs_for(
                    _read_list(lists_dir / f"{split}.txt"),
                    [base / "SegmentationClass"],
                    lists_dir / f"{split}.txt",
                )
        aug_list = lists_dir / "train_aug.txt"
        aug = opts.get_str("aug", "auto", ("auto", "true", "false"))
        if aug == "true" and not aug_list.is_file():
            raise DataError(f"aug=true but {aug_list} (the SBD-augmented train list) is missing")
        if aug != "false" and aug_list.is_file():
            val_stems = {p[0].stem for p in splits.get("val", [])}
            stems = [s for s in _read_list(aug_list) if s not in val_stems]
            mask_dirs = [base / "SegmentationClassAug", base / "SegmentationClass"]
            splits["train"] = pairs_for(stems, mask_dirs, aug_list)
            notes.append(
                f"train = SBD-augmented list train_aug.txt ({len(splits['train'])} pairs,"
                " val images excluded)"
            )
        notes.append("splits from ImageSets/Segmentation")
    else:
        pairs, problems = match_by_stem(
            list_images(base / "JPEGImages"), list_images(base / "SegmentationClass"), str(base)
        )
        splits = _seeded_split(pairs, opts, notes, "flat VOC-style folder, no ImageSets")
    return DataSource("voc", root, "voc", decoder, splits, notes, problems)


def _cityscapes(root: Path, opts: Options) -> DataSource:
    classes = opts.get_int("classes", 19)
    classmap, lut = cityscapes_view(classes)
    decoder = MaskDecoder(
        "index",
        classmap,
        lut,
        notes=(
            {
                34: "34 label ids as classes",
                19: "19 train ids, the other 15 label ids -> ignore",
                7: "7 categories, void category -> ignore",
            }[classes],
        ),
    )
    image_root, gt_root = root / "leftImg8bit", root / "gtFine"
    if not image_root.is_dir() or not gt_root.is_dir():
        raise DataError(f"{root}: expected leftImg8bit/ and gtFine/ folders")
    splits: dict[str, list[Pair]] = {}
    problems: list[str] = []
    for split in SPLIT_NAMES:
        if not (image_root / split).is_dir():
            continue
        pairs = []
        for image in sorted((image_root / split).glob("*/*_leftImg8bit.png")):
            prefix = image.name[: -len("_leftImg8bit.png")]
            mask = gt_root / split / image.parent.name / f"{prefix}_gtFine_labelIds.png"
            if mask.is_file():
                pairs.append((image, mask))
            else:
                problems.append(f"image without mask: {image} (expected {mask})")
        splits[split] = pairs
    if not any(splits.values()):
        problems.append(f"no leftImg8bit/<split>/<city>/*_leftImg8bit.png files under {root}")
    return DataSource(
        "cityscapes", root, f"cityscapes/{classes}", decoder, splits, list(decoder.notes), problems
    )


SUIM_CLASSES = [
    ("Background (waterbody)", (0, 0, 0)),
    ("Human divers", (0, 0, 255)),
    ("Plants and sea-grass", (0, 255, 0)),
    ("Wrecks and ruins", (0, 255, 255)),
    ("Robots", (255, 0, 0)),
    ("Reefs and invertebrates", (255, 0, 255)),
    ("Fish and vertebrates", (255, 255, 0)),
    ("Sea-floor and rocks", (255, 255, 255)),
]


def _suim(root: Path, opts: Options) -> DataSource:
    import numpy as np

    classmap = ClassMap(tuple(n for n, _ in SUIM_CLASSES), tuple(c for _, c in SUIM_CLASSES))
    # 3-bit code r*4 + g*2 + b equals the class order above.
    decoder = MaskDecoder(
        "bits",
        classmap,
        np.arange(8, dtype=np.int64),
        notes=("8 classes from bit colours; mask channels thresholded at 128 (>= 128 -> on)",),
    )
    notes = list(decoder.notes)
    splits: dict[str, list[Pair]] = {}
    problems: list[str] = []
    if (root / "train_val").is_dir():
        for folder, name in ((root / "train_val", "train"), (root / "TEST", "test")):
            if folder.is_dir():
                pairs, probs = match_by_stem(
                    list_images(folder / "images"), list_images(folder / "masks"), str(folder)
                )
                splits[name], problems = pairs, problems + probs
        if opts.get_float("val_fraction", 0.15) > 0 and splits.get("train"):
            held = random_split(
                splits["train"], opts.get_float("val_fraction", 0.15), 0.0, opts.get_int("seed", 0)
            )
            splits["train"], splits["val"] = held["train"], held.get("val", [])
            notes.append(f"val split drawn from train_val with seed={opts.get_int('seed', 0)}")
    else:
        pairs, problems = match_by_stem(
            list_images(root / "images"), list_images(root / "masks"), str(root)
        )
        splits = _seeded_split(pairs, opts, notes, "no split in this layout")
    return DataSource("suim", root, "suim", decoder, splits, notes, problems)


def _synthetic(root: Path, opts: Options) -> DataSource:
    if not (root / "images").is_dir():
        from seglab.data.synthetic import make_synthetic

        make_synthetic(
            root,
            n_train=opts.get_int("n_train", 32),
            n_val=opts.get_int("n_val", 8),
            n_test=opts.get_int("n_test", 8),
            size=(opts.get_int("height", 64), opts.get_int("width", 64)),
            num_classes=opts.get_int("num_classes", 5),
            seed=opts.get_int("seed", 0),
        )
    for name in ("n_train", "n_val", "n_test", "height", "width", "num_classes", "seed"):
        opts.used.add(name)
    return _folder(root, opts, fmt="synthetic")


ADAPTERS: dict[str, Callable[[Path, Options], DataSource]] = {
    "folder": _folder,
    "camvid": _camvid,
    "voc": _voc,
    "cityscapes": _cityscapes,
    "suim": _suim,
    "synthetic": _synthetic,
}


def parse_spec(spec: str) -> tuple[str, Path]:
    """``"camvid:/data/CamVid"`` -> ``("camvid", Path("/data/CamVid"))``."""
    fmt, sep, path = spec.partition(":")
    if not sep or fmt not in ADAPTERS:
        raise ConfigError(
            f"data spec {spec!r}: expected '<format>:<path>' with format one of "
            f"{', '.join(ADAPTERS)} (e.g. camvid:/data/CamVid)"
        )
    return fmt, Path(path).expanduser()


def open_source(spec: str, *, strict: bool = True, **options: Any) -> DataSource:
    """Open a dataset from a spec string such as ``"camvid:PATH"`` or ``"cityscapes:PATH"``.

    Args:
        spec: ``"<format>:<path>"``, format one of ``folder, camvid, voc, cityscapes, suim,
            synthetic``.
        strict: raise ``DataError`` on layout problems (an image without a mask, a list entry
            without files); with ``strict=False`` they are kept in ``DataSource.problems``.
        **options: adapter options, e.g. ``classes=19`` (cityscapes), ``keep_void=True``,
            ``seed=0``, ``val_fraction=0.15``, ``mask="color"`` (folder).
    """
    fmt, root = parse_spec(spec)
    if fmt != "synthetic" and not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    if fmt != "synthetic" and not any(root.iterdir()):
        raise DataError(f"dataset folder is empty: {root}")
    opts = Options(fmt, options)
    opts.used.update(COMMON_OPTIONS)
    source = ADAPTERS[fmt](root, opts)
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
