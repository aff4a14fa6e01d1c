"""Format adapters on real shared data and on small trees the tests write themselves."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import seglab
import seglab.data
from seglab.data.classes import ClassMap, TableRow, cityscapes_view
from seglab.data.formats import (
    FORMATS,
    DataSource,
    Options,
    list_images,
    match_by_stem,
    open_source,
    register_format,
)
from seglab.data.masks import index_decoder
from seglab.errors import ConfigError, DataError

DATA_PACKAGE = Path(seglab.data.__file__).parent


def _png(path, array, palette=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(array, dtype=np.uint8))
    if palette is not None:
        im = im.convert("P") if im.mode != "P" else im
        im.putpalette(palette)
    im.save(path)


def _image(h=8, w=10, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


# --- real data -----------------------------------------------------------------------------


def test_camvid11_real(shared_data):
    source = open_source(f"camvid:{shared_data / 'camvid11'}")
    assert {k: len(v) for k, v in source.splits.items()} == {"train": 367, "val": 101, "test": 233}
    assert source.classmap.names[0] == "Sky" and source.classmap.num_classes == 11
    image, mask = source.dataset("val")[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 360, 480)
    assert mask.dtype == torch.int64 and mask.shape == (360, 480)
    values = set(mask.unique().tolist())
    assert values <= set(range(11)) | {255}


def test_camseq_32_classes_void_ignored_and_kept(shared_data):
    root = shared_data / "camseq01-sample"
    source = open_source(f"camvid:{root}")
    assert source.classmap.num_classes == 31 and "Void" not in source.classmap.names
    assert any("32 classes in table, Void -> ignore, 31 trained" in n for n in source.notes)
    kept = open_source(f"camvid:{root}", keep_void=True)
    assert kept.classmap.num_classes == 32 and "Void" in kept.classmap.names
    mask = kept.dataset("train").load_mask(0)
    assert mask.shape == (720, 960) and mask.max() < 32


def test_camvid32_tiny_fastai(shared_data):
    source = open_source(f"camvid:{shared_data / 'camvid32-tiny'}")
    assert sum(len(v) for v in source.splits.values()) == 100
    assert source.classmap.num_classes == 31
    assert any("random" in n for n in source.notes)


def test_suim_and_voc_samples(shared_data):
    suim = open_source(f"suim:{shared_data / 'suim-samples'}")
    assert suim.classmap.num_classes == 8
    assert any("128" in n for n in suim.notes)
    mask = suim.dataset("train").load_mask(0)
    assert mask.min() >= 0 and mask.max() < 8
    voc = open_source(f"voc:{shared_data / 'voc-samples'}")
    assert voc.classmap.num_classes == 21 and sum(len(v) for v in voc.splits.values()) == 3
    _, vmask = voc.dataset("train")[0]
    assert set(vmask.unique().tolist()) <= set(range(21)) | {255}


# --- written trees ---------------------------------------------------------------------------


def test_folder_index_masks_with_split_subfolders(tmp_path):
    for split in ("train", "val"):
        for i in range(3):
            _png(tmp_path / "images" / split / f"a{i}.png", _image(seed=i))
            _png(tmp_path / "masks" / split / f"a{i}_mask.png", np.full((8, 10), i % 3))
    (tmp_path / "classes.csv").write_text("name,r,g,b\nbg,0,0,0\ncat,255,0,0\ndog,0,255,0\n")
    source = open_source(f"folder:{tmp_path}")
    assert set(source.splits) == {"train", "val"} and source.layout == "folder/index"
    assert source.classmap.names == ("bg", "cat", "dog")
    assert source.dataset("val")[2][1].unique().tolist() == [2]


def test_folder_colour_masks_and_index_override(tmp_path):
    colours = {(0, 0, 0): 0, (255, 0, 0): 1, (0, 0, 255): 2}
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[:, 5:] = (255, 0, 0)
    rgb[6:, :] = (0, 0, 255)
    for i in range(4):
        _png(tmp_path / "images" / f"x{i}.jpg".replace(".jpg", ".png"), _image(seed=i))
        _png(tmp_path / "masks" / f"x{i}.png", rgb)
    (tmp_path / "label_colors.txt").write_text("0 0 0\tVoid\n255 0 0\tCar\n0 0 255\tSky\n")
    source = open_source(f"folder:{tmp_path}")
    assert source.layout == "folder/color" and source.classmap.names == ("Car", "Sky")
    mask = source.dataset("train").load_mask(0)
    expected = np.vectorize(lambda k: {0: 255, 1: 0, 2: 1}[k])(
        np.array([[colours[tuple(px)] for px in row] for row in rgb])
    )
    np.testing.assert_array_equal(mask, expected)
    kept = open_source(f"folder:{tmp_path}", keep_void=True)
    assert kept.classmap.num_classes == 3


def test_folder_split_lists_and_inferred_classes(tmp_path):
    for i in range(4):
        _png(tmp_path / "images" / f"s{i}.png", _image(seed=i))
        _png(tmp_path / "masks" / f"s{i}.png", np.full((8, 10), i))
    (tmp_path / "train.txt").write_text("s0\ns1\ns2\n")
    (tmp_path / "val.txt").write_text("s3.png\n")
    source = open_source(f"folder:{tmp_path}")
    assert [len(source.splits[s]) for s in ("train", "val")] == [3, 1]
    assert source.classmap.num_classes == 4
    assert any("inferred" in n for n in source.notes)


def test_voc_palette_masks_devkit_layout(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2012"
    palette = [0] * 768
    palette[3:6] = [128, 0, 0]
    ids = np.zeros((8, 10), np.uint8)
    ids[2:5, 2:5] = 1
    ids[0, :] = 255
    for stem in ("2007_000001", "2007_000002", "2007_000003"):
        (base / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_image()).save(base / "JPEGImages" / f"{stem}.jpg")
        _png(base / "SegmentationClass" / f"{stem}.png", ids, palette)
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000001\n2007_000002\n")
    (lists / "val.txt").write_text("2007_000003\n")
    source = open_source(f"voc:{tmp_path}")
    assert [len(source.splits[s]) for s in ("train", "val")] == [2, 1]
    mask = source.dataset("val").load_mask(0)
    np.testing.assert_array_equal(mask, np.where(ids == 255, 255, ids))
    # SBD-augmented list replaces train, minus val images.
    (base / "SegmentationClassAug").mkdir()
    Image.fromarray(ids).save(base / "SegmentationClassAug" / "2007_000003.png")
    (lists / "train_aug.txt").write_text("2007_000001\n2007_000002\n2007_000003\n")
    aug = open_source(f"voc:{tmp_path}")
    assert [p[0].stem for p in aug.splits["train"]] == ["2007_000001", "2007_000002"]


@pytest.mark.parametrize("classes", [34, 19, 7])
def test_cityscapes_label_ids(tmp_path, classes):
    label_ids = np.array([[7, 8, 26, 0], [24, 9, 33, 23]], np.uint8)  # road sidewalk car unlabeled
    for split, city in (("train", "aachen"), ("val", "frankfurt")):
        prefix = f"{city}_000000_000019"
        _png(tmp_path / "leftImg8bit" / split / city / f"{prefix}_leftImg8bit.png", _image(2, 4))
        _png(tmp_path / "gtFine" / split / city / f"{prefix}_gtFine_labelIds.png", label_ids)
    source = open_source(f"cityscapes:{tmp_path}", classes=str(classes))
    assert source.classmap.num_classes == classes
    mask = source.dataset("val").load_mask(0)
    expected = {
        34: label_ids.astype(np.int64),
        19: np.array([[0, 1, 13, 255], [11, 255, 18, 10]]),
        7: np.array([[0, 0, 6, 255], [5, 0, 6, 4]]),
    }[classes]
    np.testing.assert_array_equal(mask, expected)


def test_cityscapes_official_table_facts():
    cm19, lut = cityscapes_view(19)
    assert cm19.names[0] == "road" and cm19.names[-1] == "bicycle" and lut[33] == 18
    assert lut[29] == 255 and lut[30] == 255  # caravan, trailer: not evaluated
    cm7, _ = cityscapes_view(7)
    assert cm7.names == ("flat", "construction", "object", "nature", "sky", "human", "vehicle")


def test_synthetic_spec_generates_and_is_deterministic(tmp_path):
    a = open_source(f"synthetic:{tmp_path / 'a'}", n_train=4, n_val=2, n_test=2)
    b = open_source(f"synthetic:{tmp_path / 'b'}", n_train=4, n_val=2, n_test=2)
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 4, "val": 2, "test": 2}
    for (ia, ma), (ib, mb) in zip(a.dataset("train"), b.dataset("train"), strict=True):
        assert torch.equal(ia, ib) and torch.equal(ma, mb)


def test_spec_and_option_errors(tmp_path):
    with pytest.raises(ConfigError, match="format one of"):
        open_source(f"nope:{tmp_path}")
    (tmp_path / "x").mkdir()
    with pytest.raises(ConfigError, match="classes=5"):
        open_source(f"cityscapes:{tmp_path}", classes=5)


def test_classmap_roundtrip():
    cm = ClassMap(("a", "b"), ((1, 2, 3), (4, 5, 6)))
    assert ClassMap.from_dict(cm.to_dict()) == cm
    assert cm.palette().shape == (2, 3) and cm.palette().dtype == np.uint8


def test_suim_bit_colours_thresholded_at_128(tmp_path):
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[:, 4:] = (250, 3, 251)  # noisy magenta -> Reefs (code 101 = 5)
    rgb[0, 0] = (130, 130, 127)  # just over / under the threshold -> 110 = Fish (6)
    _png(tmp_path / "images" / "d_r_1_.png", _image(6, 8))
    (tmp_path / "masks").mkdir()
    Image.fromarray(rgb).save(tmp_path / "masks" / "d_r_1_.bmp")
    mask = open_source(f"suim:{tmp_path}").dataset("train").load_mask(0)
    assert mask[0, 0] == 6 and (mask[:, 4:] == 5).all() and (mask[1:, :4] == 0).all()


def test_camvid_segnet_lists_use_basenames(tmp_path):
    ids = np.array([[0, 3], [11, 10]], np.uint8)
    lines = {}
    for split in ("train", "val", "test"):
        _png(tmp_path / split / f"{split}1.png", _image(2, 2))
        _png(tmp_path / f"{split}annot" / f"{split}1.png", ids)
        lines[split] = (
            f"/SegNet/CamVid/{split}/{split}1.png /SegNet/CamVid/{split}annot/{split}1.png"
        )
        (tmp_path / f"{split}.txt").write_text(lines[split] + "\n")
    source = open_source(f"camvid:{tmp_path}")
    assert source.layout == "camvid/segnet-11"
    np.testing.assert_array_equal(source.dataset("test").load_mask(0), [[0, 3], [255, 10]])


# --- the registry and the layering of seglab.data -------------------------------------------


def _declared_formats() -> set[str]:
    """The names the modules of ``seglab/data/formats/`` register with ``@register_format``."""
    names: set[str] = set()
    for path in (DATA_PACKAGE / "formats").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "register_format"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                names.add(node.args[0].value)
    return names


def test_every_layout_is_registered():
    """Every format module's adapter reaches the registry (the package face imports it)."""
    declared = _declared_formats()
    assert {"folder", "camvid", "synthetic"} <= declared  # the walk is real
    assert set(FORMATS) == declared
    assert [name for name, f in FORMATS.items() if f.creates_root] == ["synthetic"]


def test_data_verbs_help_lists_every_registered_format():
    from seglab.cli.main import app

    for verb in ("check", "inspect"):
        result = CliRunner().invoke(app, ["data", verb, "--help"], terminal_width=200)
        assert result.exit_code == 0, result.output
        listed = result.output.split("'<format>:<path>':", 1)[1].split(".", 1)[0]
        assert {name.strip() for name in listed.split(",")} == set(FORMATS), result.output


def test_a_new_format_is_one_decorated_adapter(tmp_path):
    """What a format module holds: an adapter registered under its spec prefix."""

    @register_format("flat_test")
    def open_flat(root: Path, opts: Options) -> DataSource:
        decoder = index_decoder([TableRow("bg", None), TableRow("fg", None)])
        pairs, problems = match_by_stem(list_images(root / "rgb"), list_images(root / "gt"), "t")
        scale = opts.get_int("scale", 1)
        return DataSource("flat_test", root, f"flat/{scale}", decoder, {"train": pairs},
                          problems=problems)

    try:
        _png(tmp_path / "rgb" / "a.png", _image(4, 4))
        _png(tmp_path / "gt" / "a_mask.png", np.ones((4, 4)))
        source = open_source(f"flat_test:{tmp_path}", scale="2")
        assert source.layout == "flat/2" and len(source.splits["train"]) == 1
        assert (source.dataset("train").load_mask(0) == 1).all()
        with pytest.raises(ConfigError, match="unknown flat_test option.*colour"):
            open_source(f"flat_test:{tmp_path}", colour=1)
        (tmp_path / "rgb" / "b.png").write_bytes((tmp_path / "rgb" / "a.png").read_bytes())
        with pytest.raises(DataError, match="image without mask: .*b.png"):
            open_source(f"flat_test:{tmp_path}")
        with pytest.raises(ConfigError, match="registered twice"):
            register_format("flat_test")(open_flat)
    finally:
        FORMATS.pop("flat_test", None)
    with pytest.raises(ConfigError, match="format one of"):
        open_source(f"flat_test:{tmp_path}")


def test_load_dataset_from_the_package_faces(tmp_path):
    root = tmp_path / "syn"
    ds = seglab.load_dataset(f"synthetic:{root}", "val", n_train=2, n_val=2, n_test=1)
    assert len(ds) == 2 and seglab.data.load_dataset is seglab.load_dataset
    image, mask = ds[0]
    assert image.dtype == torch.uint8 and mask.dtype == torch.int64


def _imports(path: Path) -> set[str]:
    """Every seglab module a file imports, at the top or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.startswith("seglab")}


def test_data_layer_imports_point_down_without_cycles():
    root = DATA_PACKAGE.parent.parent
    modules = {}
    for path in DATA_PACKAGE.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    # Besides itself, only the foundation modules that import nothing of seglab: errors, file
    # writing, and the stop signals (DataLoader workers ignore them, `seglab.stops`).
    allowed = ("seglab.data", "seglab.errors", "seglab.io_utils", "seglab.stops")
    graph = {}
    for name, path in modules.items():
        targets = _imports(path)
        upward = [t for t in targets if not any(t == a or t.startswith(a + ".") for a in allowed)]
        assert not upward, f"{path} imports {upward}: the data layer imports nothing above it"
        graph[name] = {t for t in targets if t in modules and t != name}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph[start] - seen:
            seen.add(nxt)
            if nxt == goal or reaches(nxt, goal, seen):
                return True
        return False

    cyclic = sorted(name for name in graph if reaches(name, name, set()))
    assert not cyclic, f"import cycle among {cyclic}"
    assert "seglab.data.formats.base" in graph["seglab.data.formats.camvid"]  # the walk is real
