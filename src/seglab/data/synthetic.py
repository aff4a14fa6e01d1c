"""A procedural dataset for tests and demos: textured shapes on a textured background.

``make_synthetic`` writes a ``folder:`` layout (``images/{train,val,test}``,
``masks/{train,val,test}``, ``classes.csv``) in well under a second for the default size.
Everything follows from ``seed``. Each class has its own base colour *and* texture (noise,
stripes, checks, rings...), so a small model can learn it in a few epochs; the last class is
rare (in about a third of the images, small). Masks are exact: they are drawn, not estimated.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from seglab.data.classes import default_palette
from seglab.errors import ConfigError
from seglab.io_utils import atomic_dir

# Distinct, saturated base colours; class 0 (background) is a muted grey-green.
_BASE_COLORS = [
    (96, 112, 96),
    (220, 60, 50),
    (50, 110, 220),
    (240, 200, 40),
    (150, 60, 200),
    (40, 190, 170),
    (240, 130, 30),
    (230, 90, 170),
    (120, 200, 60),
    (140, 90, 40),
]
_NAMES = ["background", "disc", "box", "triangle", "ring", "blob", "bar", "star", "leaf", "rock"]


def _class_colors(num_classes: int) -> list[tuple[int, int, int]]:
    extra = default_palette(num_classes + 1)[1:]  # skip the black of entry 0
    return [
        _BASE_COLORS[c] if c < len(_BASE_COLORS) else tuple(int(v) for v in extra[c])
        for c in range(num_classes)
    ]


def _textures(h: int, w: int) -> list[Callable[[np.random.Generator], np.ndarray]]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    def smooth(rng: np.random.Generator) -> np.ndarray:
        coarse = rng.standard_normal((h // 8 + 2, w // 8 + 2)).astype(np.float32)
        return np.kron(coarse, np.ones((8, 8), np.float32))[:h, :w] * 0.5

    def stripes(rng: np.random.Generator) -> np.ndarray:
        return np.sin((xx + yy) * 0.8 + rng.uniform(0, 6.3))

    def checks(rng: np.random.Generator) -> np.ndarray:
        return ((yy // 4 + xx // 4) % 2) * 2.0 - 1.0

    def rings(rng: np.random.Generator) -> np.ndarray:
        return np.sin(np.hypot(yy - h / 2, xx - w / 2) * 1.2)

    def vertical(rng: np.random.Generator) -> np.ndarray:
        return np.sign(np.sin(xx * 1.1 + rng.uniform(0, 6.3)))

    return [smooth, stripes, checks, rings, vertical]


def _shape_mask(kind: int, h: int, w: int, rng: np.random.Generator, scale: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
    ry, rx = (rng.uniform(0.5, 1.0, 2) * scale * np.array([h, w])).clip(2)
    if kind == 0:  # ellipse
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    if kind == 1:  # axis-aligned box
        return (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
    # triangle: inside three half-planes around the centre
    angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2.1, 4.2])
    py, px = cy + ry * np.sin(angles), cx + rx * np.cos(angles)
    inside = np.ones((h, w), bool)
    for i in range(3):
        j = (i + 1) % 3
        cross = (px[j] - px[i]) * (yy - py[i]) - (py[j] - py[i]) * (xx - px[i])
        inside &= cross >= 0
    return inside


def _render(
    rng: np.random.Generator, h: int, w: int, num_classes: int, colors, textures
) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((h, w), np.uint8)
    layers = [(0, np.ones((h, w), bool))]
    rare = num_classes - 1 if num_classes >= 3 else None
    common = list(range(1, rare if rare is not None else num_classes))
    for _ in range(int(rng.integers(2, 5))):
        cls = int(rng.choice(common))
        layers.append((cls, _shape_mask((cls - 1) % 3, h, w, rng, rng.uniform(0.15, 0.3))))
    if rare is not None and rng.random() < 0.35:
        layers.append((rare, _shape_mask((rare - 1) % 3, h, w, rng, rng.uniform(0.06, 0.1))))
    image = np.zeros((h, w, 3), np.float32)
    for cls, region in layers:
        mask[region] = cls
    for cls in np.unique(mask):
        region = mask == cls
        texture = textures[int(cls) % len(textures)](rng)
        base = np.asarray(colors[cls], np.float32) * rng.uniform(0.9, 1.1)
        image[region] = base + 28.0 * texture[region][:, None]
    image += rng.normal(0, 4.0, image.shape).astype(np.float32)
    return image.clip(0, 255).astype(np.uint8), mask


def make_synthetic(
    root: str | Path,
    n_train: int = 32,
    n_val: int = 8,
    n_test: int = 8,
    size: tuple[int, int] = (64, 64),
    num_classes: int = 5,
    seed: int = 0,
) -> Path:
    """Write a synthetic ``folder:`` dataset to ``root`` (replaced atomically) and return it.

    Args:
        root: output folder.
        n_train, n_val, n_test: pairs per split (0 skips the split).
        size: (height, width) of every image.
        num_classes: 2..255; class 0 is the background, class ``num_classes-1`` is rare.
        seed: everything (layout, colours jitter, noise) follows from it.
    """
    if not 2 <= num_classes <= 255:
        raise ConfigError(f"make_synthetic: num_classes must be 2..255, got {num_classes}")
    h, w = int(size[0]), int(size[1])
    if h < 16 or w < 16:
        raise ConfigError(f"make_synthetic: size must be at least 16x16, got {h}x{w}")
    colors = _class_colors(num_classes)
    textures = _textures(h, w)
    rng = np.random.default_rng(seed)
    root = Path(root)
    with atomic_dir(root) as tmp:
        for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
            if count <= 0:
                continue
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "masks" / split).mkdir(parents=True)
            for i in range(count):
                image, mask = _render(rng, h, w, num_classes, colors, textures)
                name = f"{split}_{i:04d}.png"
                Image.fromarray(image).save(tmp / "images" / split / name)
                Image.fromarray(mask).save(tmp / "masks" / split / name)
        names = _NAMES[:num_classes] + [f"class_{c}" for c in range(len(_NAMES), num_classes)]
        lines = ["name,r,g,b"] + [
            f"{n},{r},{g},{b}" for n, (r, g, b) in zip(names, colors, strict=True)
        ]
        (tmp / "classes.csv").write_text("\n".join(lines) + "\n")
    return root
