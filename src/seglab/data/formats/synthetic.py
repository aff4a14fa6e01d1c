"""``synthetic:PATH``: a ``folder:`` dataset written by ``make_synthetic``, generated if missing.

Generation options (used only when ``PATH/images`` does not exist yet): ``n_train``,
``n_val``, ``n_test``, ``height``, ``width``, ``num_classes``, ``seed``.
"""

from __future__ import annotations

from pathlib import Path

from seglab.data.formats.base import DataSource, Options, register_format
from seglab.data.formats.folder import open_folder
from seglab.data.synthetic import make_synthetic

_GENERATION_OPTIONS = ("n_train", "n_val", "n_test", "height", "width", "num_classes", "seed")


@register_format("synthetic", creates_root=True)
def open_synthetic(root: Path, opts: Options) -> DataSource:
    """Write the dataset on first use, then read it as a ``folder:`` layout."""
    if not (root / "images").is_dir():
        make_synthetic(
            root,
            n_train=opts.get_int("n_train", 32),
            n_val=opts.get_int("n_val", 8),
            n_test=opts.get_int("n_test", 8),
            size=(opts.get_int("height", 64), opts.get_int("width", 64)),
            num_classes=opts.get_int("num_classes", 5),
            seed=opts.get_int("seed", 0),
        )
    # Accepted even when the dataset exists already (then they have no effect).
    opts.used.update(_GENERATION_OPTIONS)
    return open_folder(root, opts, fmt="synthetic")
