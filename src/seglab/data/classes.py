"""Class tables: names, display colours, the ignore index, and raw-id remaps.

``ClassMap`` is the one place class names and colours live (``docs/internals.md``). The
readers below turn the class-table files of the common layouts into ``(name, colour)`` rows,
and ``CITYSCAPES_LABELS`` is the official Cityscapes label table (label id -> train id ->
category) used to build the 34-, 19- and 7-class views.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from seglab.errors import ConfigError, DataError

IGNORE_INDEX = 255
Color = tuple[int, int, int]

# Names that mean "not a class" in the common datasets; they map to the ignore index unless
# the caller asks to keep them (``keep_void=True``).
VOID_NAMES = frozenset({"void", "unlabeled", "unlabelled", "ignore", "__ignore__"})


@dataclass(frozen=True)
class ClassMap:
    """The trainable classes of a dataset: index in ``names`` = train id."""

    names: tuple[str, ...]
    colors: tuple[Color, ...]
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "colors", tuple(tuple(int(v) for v in c) for c in self.colors))
        if len(self.names) != len(self.colors):
            raise DataError(
                f"class table has {len(self.names)} names but {len(self.colors)} colours"
            )
        if not self.names:
            raise DataError("class table is empty: at least one class is needed")
        if 0 <= self.ignore_index < len(self.names):
            raise DataError(
                f"ignore index {self.ignore_index} collides with class "
                f"{self.names[self.ignore_index]!r} (there are {len(self.names)} classes)"
            )
        for name, color in zip(self.names, self.colors, strict=True):
            if len(color) != 3 or not all(0 <= v <= 255 for v in color):
                raise DataError(f"class {name!r}: colour {color} is not an RGB triple 0..255")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def palette(self) -> np.ndarray:
        """Display colours as ``uint8 [num_classes, 3]``."""
        return np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)

    def index(self, name: str) -> int:
        """Train id of ``name`` (case-insensitive)."""
        lowered = [n.lower() for n in self.names]
        try:
            return lowered.index(name.lower())
        except ValueError:
            raise DataError(f"no class named {name!r}; classes: {', '.join(self.names)}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "colors": [list(c) for c in self.colors],
            "ignore_index": self.ignore_index,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassMap:
        return cls(
            names=tuple(data["names"]),
            colors=tuple(tuple(c) for c in data["colors"]),
            ignore_index=int(data.get("ignore_index", IGNORE_INDEX)),
        )

    @classmethod
    def from_names(cls, names: Sequence[str], ignore_index: int = IGNORE_INDEX) -> ClassMap:
        """Class map with the VOC-style default palette."""
        return cls(tuple(names), tuple(map(tuple, default_palette(len(names)))), ignore_index)


def default_palette(n: int) -> np.ndarray:
    """The Pascal VOC bit-interleaved palette: distinct, stable colours for ``n`` classes."""
    ids = np.arange(n)
    pal = np.zeros((n, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (ids >> (3 * shift + channel)) & 1
            pal[:, channel] |= bit << (7 - shift)
    return pal.astype(np.uint8)


class TableRow(NamedTuple):
    """One row of a class-table file: a name and, when the file has one, a colour."""

    name: str
    color: Color | None


def is_void(name: str) -> bool:
    return name.strip().lower() in VOID_NAMES


def read_class_table(path: str | Path) -> list[TableRow]:
    """Read a class table, by file type.

    - ``*.csv`` (``classes.csv``, Kaggle CamVid ``class_dict.csv``): ``name,r,g,b`` with an
      optional header row.
    - ``label_colors.txt`` (CamVid): ``R G B<TAB>Name`` per line.
    - other ``*.txt`` (``codes.txt``, ``class_names.txt``): one name per line, line i = id i.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read class table {path}: {exc}") from exc
    if path.suffix.lower() == ".csv":
        rows = _parse_csv_table(text, path)
    elif _looks_like_color_lines(text):
        rows = _parse_color_lines(text, path)
    else:
        rows = [TableRow(line.strip(), None) for line in text.splitlines() if line.strip()]
    if not rows:
        raise DataError(f"class table {path} has no classes")
    names = [r.name for r in rows]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"class table {path} repeats class names: {', '.join(duplicates)}")
    colors = [r.color for r in rows if r.color is not None]
    if len(set(colors)) != len(colors):
        raise DataError(f"class table {path} gives the same colour to two classes")
    return rows


def _looks_like_color_lines(text: str) -> bool:
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    parts = first.split()
    return len(parts) >= 4 and all(p.isdigit() for p in parts[:3])


def _parse_color(values: Iterable[str], path: Path, line_no: int) -> Color:
    try:
        r, g, b = (int(v) for v in values)
    except ValueError:
        raise DataError(f"class table {path} line {line_no}: colour is not 3 integers") from None
    if not all(0 <= v <= 255 for v in (r, g, b)):
        raise DataError(f"class table {path} line {line_no}: colour {(r, g, b)} outside 0..255")
    return (r, g, b)


def _parse_color_lines(text: str, path: Path) -> list[TableRow]:
    rows = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(None, 3)
        if len(parts) < 4:
            raise DataError(f"class table {path} line {line_no}: expected 'R G B<TAB>Name'")
        rows.append(TableRow(parts[3].strip(), _parse_color(parts[:3], path, line_no)))
    return rows


def _parse_csv_table(text: str, path: Path) -> list[TableRow]:
    rows = []
    for line_no, cells in enumerate(csv.reader(text.splitlines()), 1):
        cells = [c.strip() for c in cells]
        if not cells or not any(cells):
            continue
        if line_no == 1 and len(cells) >= 4 and not cells[1].isdigit():
            continue  # header row such as "name,r,g,b"
        if len(cells) == 1:
            rows.append(TableRow(cells[0], None))
        elif len(cells) >= 4:
            rows.append(TableRow(cells[0], _parse_color(cells[1:4], path, line_no)))
        else:
            raise DataError(f"class table {path} line {line_no}: expected 'name,r,g,b'")
    if any(r.color is None for r in rows) and any(r.color is not None for r in rows):
        raise DataError(f"class table {path}: some rows have colours and some do not")
    return rows


# --- Cityscapes ------------------------------------------------------------------------------


class CityscapesLabel(NamedTuple):
    name: str
    label_id: int
    train_id: int  # 255 = not one of the 19 evaluated classes
    category: str
    category_id: int  # 0 = void
    color: Color


# The official table (cityscapesScripts ``helpers/labels.py``), label ids 0..33.
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = tuple(
    CityscapesLabel(*row)
    for row in [
        ("unlabeled", 0, 255, "void", 0, (0, 0, 0)),
        ("ego vehicle", 1, 255, "void", 0, (0, 0, 0)),
        ("rectification border", 2, 255, "void", 0, (0, 0, 0)),
        ("out of roi", 3, 255, "void", 0, (0, 0, 0)),
        ("static", 4, 255, "void", 0, (0, 0, 0)),
        ("dynamic", 5, 255, "void", 0, (111, 74, 0)),
        ("ground", 6, 255, "void", 0, (81, 0, 81)),
        ("road", 7, 0, "flat", 1, (128, 64, 128)),
        ("sidewalk", 8, 1, "flat", 1, (244, 35, 232)),
        ("parking", 9, 255, "flat", 1, (250, 170, 160)),
        ("rail track", 10, 255, "flat", 1, (230, 150, 140)),
        ("building", 11, 2, "construction", 2, (70, 70, 70)),
        ("wall", 12, 3, "construction", 2, (102, 102, 156)),
        ("fence", 13, 4, "construction", 2, (190, 153, 153)),
        ("guard rail", 14, 255, "construction", 2, (180, 165, 180)),
        ("bridge", 15, 255, "construction", 2, (150, 100, 100)),
        ("tunnel", 16, 255, "construction", 2, (150, 120, 90)),
        ("pole", 17, 5, "object", 3, (153, 153, 153)),
        ("polegroup", 18, 255, "object", 3, (153, 153, 153)),
        ("traffic light", 19, 6, "object", 3, (250, 170, 30)),
        ("traffic sign", 20, 7, "object", 3, (220, 220, 0)),
        ("vegetation", 21, 8, "nature", 4, (107, 142, 35)),
        ("terrain", 22, 9, "nature", 4, (152, 251, 152)),
        ("sky", 23, 10, "sky", 5, (70, 130, 180)),
        ("person", 24, 11, "human", 6, (220, 20, 60)),
        ("rider", 25, 12, "human", 6, (255, 0, 0)),
        ("car", 26, 13, "vehicle", 7, (0, 0, 142)),
        ("truck", 27, 14, "vehicle", 7, (0, 0, 70)),
        ("bus", 28, 15, "vehicle", 7, (0, 60, 100)),
        ("caravan", 29, 255, "vehicle", 7, (0, 0, 90)),
        ("trailer", 30, 255, "vehicle", 7, (0, 0, 110)),
        ("train", 31, 16, "vehicle", 7, (0, 80, 100)),
        ("motorcycle", 32, 17, "vehicle", 7, (0, 0, 230)),
        ("bicycle", 33, 18, "vehicle", 7, (119, 11, 32)),
    ]
)
# Display colours of the 7 categories: the colour of a representative class of each.
CITYSCAPES_CATEGORY_COLORS: dict[str, Color] = {
    "flat": (128, 64, 128),
    "construction": (70, 70, 70),
    "object": (220, 220, 0),
    "nature": (107, 142, 35),
    "sky": (70, 130, 180),
    "human": (220, 20, 60),
    "vehicle": (0, 0, 142),
}


def cityscapes_view(classes: int) -> tuple[ClassMap, np.ndarray]:
    """The ClassMap and ``label id -> train id`` lookup table (256 entries) for a view.

    - 34: every label id is its own class (official colours; several void labels share
      black); values >= 34 other than 255 are invalid.
    - 19: the official train ids; the other 15 label ids map to the ignore index.
    - 7: the categories flat..vehicle; the void category maps to the ignore index.
    The returned table holds -1 for values that are not label ids (reported as errors).
    """
    lut = np.full(256, -1, dtype=np.int64)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    if classes == 34:
        names = [lab.name for lab in CITYSCAPES_LABELS]
        colors = [lab.color for lab in CITYSCAPES_LABELS]
        for lab in CITYSCAPES_LABELS:
            lut[lab.label_id] = lab.label_id
    elif classes == 19:
        trainable = sorted(
            (lab for lab in CITYSCAPES_LABELS if lab.train_id != 255), key=lambda lab: lab.train_id
        )
        names = [lab.name for lab in trainable]
        colors = [lab.color for lab in trainable]
        for lab in CITYSCAPES_LABELS:
            lut[lab.label_id] = lab.train_id
    elif classes == 7:
        names = list(CITYSCAPES_CATEGORY_COLORS)
        colors = list(CITYSCAPES_CATEGORY_COLORS.values())
        for lab in CITYSCAPES_LABELS:
            lut[lab.label_id] = lab.category_id - 1 if lab.category_id > 0 else IGNORE_INDEX
    else:
        raise ConfigError(f"cityscapes classes={classes}: choose one of 34, 19, 7")
    return ClassMap(tuple(names), tuple(colors)), lut
