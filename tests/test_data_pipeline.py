"""Statistics and class weights, transforms, splits, the datamodule, synthetic data, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from seglab.cli.main import app
from seglab.data.classes import TableRow
from seglab.data.datamodule import SegDataModule, train_batching
from seglab.data.formats import open_source
from seglab.data.inspect import check_source, inspect_source
from seglab.data.masks import color_decoder, naive_color_decode
from seglab.data.splits import kfold, random_split
from seglab.data.stats import class_weights, compute_pixel_stats
from seglab.data.synthetic import make_synthetic
from seglab.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize, train_transform
from seglab.errors import ConfigError


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("syn") / "s", n_train=9, n_val=3, n_test=3)


def test_class_weight_formulas():
    counts = np.array([700, 200, 100, 0])
    f = counts / 1000
    inv = class_weights(counts, "inverse").numpy()
    np.testing.assert_allclose(inv[:3], 1 / (4 * f[:3]), rtol=1e-6)
    assert inv[3] == 0  # absent class: 0, its rule (no finite inverse)
    # Median frequency needs per-image presence (tests/test_class_weights.py has the rest).
    with pytest.raises(ConfigError, match="PixelStats"):
        class_weights(counts, "median_frequency")
    enet = class_weights(counts, "enet", c=1.02).numpy()
    np.testing.assert_allclose(enet[:3], 1 / np.log(1.02 + f[:3]), rtol=1e-6)
    eff = class_weights(counts, "effective_number", beta=0.99).numpy()
    raw = (1 - 0.99) / (1 - 0.99 ** counts[:3])
    np.testing.assert_allclose(eff[:3], raw * 3 / raw.sum(), rtol=1e-5)
    lin = class_weights(counts, "camvid_linear", X=80, absent_weight=5).numpy()
    np.testing.assert_allclose(lin, [10, 60, 70, 5], rtol=1e-6)
    ratio = class_weights(counts, "camvid_ratio", X=2, Y=1).numpy()
    np.testing.assert_allclose(ratio[:3], 2 * 0.7 - f[:3], rtol=1e-6)
    with pytest.raises(ConfigError, match="needs parameter"):
        class_weights(counts, "camvid_linear")
    with pytest.raises(ConfigError, match="negative weight"):
        class_weights(counts, "camvid_linear", X=10, names=["road", "b", "c", "d"])
    with pytest.raises(ConfigError, match="unknown class-weight strategy"):
        class_weights(counts, "magic")


def test_camvid11_pixel_shares_match_readme(shared_data):
    stats = compute_pixel_stats(open_source(f"camvid:{shared_data / 'camvid11'}").dataset("train"))
    share_all = stats.counts / stats.total_pixels * 100
    readme = [16.9, 23.3, 1.0, 31.7, 4.5, 9.7, 1.2, 1.1, 5.9, 0.6, 0.3]
    np.testing.assert_allclose(share_all, readme, atol=0.06)
    assert 3.5 < stats.ignore_pixels / stats.total_pixels * 100 < 4.5


def test_normalize_matches_reference():
    images = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(normalize(images), (images.float() / 255 - mean) / std)
    with pytest.raises(ConfigError):
        normalize(images.float())


def test_train_transform_moves_image_and_mask_together():
    torch.manual_seed(0)
    image = torch.zeros(3, 20, 30, dtype=torch.uint8)
    image[0, :, :15] = 255  # left half red
    mask = torch.zeros(20, 30, dtype=torch.int64)
    mask[:, :15] = 1
    transform = train_transform((32, 40), scale_range=(0.8, 1.2), hflip=0.5, rotation=20)
    from seglab.data.transforms import apply_joint

    for _ in range(10):
        out_image, out_mask = apply_joint(transform, image, mask)
        assert out_image.shape == (3, 32, 40) and out_mask.shape == (32, 40)
        assert out_image.dtype == torch.uint8 and out_mask.dtype == torch.int64
        assert set(out_mask.unique().tolist()) <= {0, 1, 255}  # nearest: no blended ids
        assert (out_mask == 255).any()  # padding / rotation corners are ignore
        red = out_image[0] > 127
        agree = (red == (out_mask == 1))[out_mask != 255].float().mean()
        assert agree > 0.93  # only resampled edge pixels may differ


def test_splits_and_kfold():
    parts = random_split(list(range(20)), 0.15, 0.15, seed=3)
    assert [len(parts[s]) for s in ("train", "val", "test")] == [14, 3, 3]
    assert sorted(sum(parts.values(), [])) == list(range(20))
    assert random_split(list(range(20)), seed=3) == parts
    folds = kfold(10, 3, seed=0)
    vals = np.concatenate([v for _, v in folds])
    assert sorted(vals.tolist()) == list(range(10))
    for train, val in folds:
        assert not set(train) & set(val) and len(train) + len(val) == 10


def test_train_batching_never_gives_batch_of_one():
    for n in range(2, 40):
        for bs in (2, 3, 4, 8):
            batch, drop_last = train_batching(n, bs) if n >= bs else (None, None)
            if batch is None:
                continue
            last = n % batch
            assert batch >= 2 and not (last == 1 and not drop_last)
    with pytest.warns(UserWarning, match="using batch_size=3"):
        assert train_batching(3, 8) == (3, False)
    with pytest.raises(ConfigError, match="at least 2"):
        train_batching(1, 4)


def test_datamodule_loaders_and_kfold(synthetic):
    dm = SegDataModule(f"folder:{synthetic}", batch_size=4)
    sizes = [images.shape[0] for images, _ in dm.train_dataloader()]
    assert sum(sizes) == 8 and 1 not in sizes  # 9 samples, batch 4: last single one dropped
    images, masks = next(iter(dm.val_dataloader()))
    assert images.dtype == torch.uint8 and masks.dtype == torch.int64
    folds = [SegDataModule(f"folder:{synthetic}", batch_size=2, fold=i, k=3) for i in range(3)]
    val_sets = [{p[0].name for p in f.dataset("val").pairs} for f in folds]
    assert sum(len(v) for v in val_sets) == 12 and not val_sets[0] & val_sets[1]


def test_synthetic_is_learnable_from_colour(synthetic):
    # A per-pixel linear classifier on RGB must already separate the classes well.
    source = open_source(f"folder:{synthetic}")
    cm = source.classmap
    assert cm.num_classes == 5
    stats = compute_pixel_stats(source.dataset("train"))
    assert (stats.counts > 0).sum() >= 4
    pairs = [source.dataset("train")[i] for i in range(9)]
    x = torch.cat([img.reshape(3, -1).T.float() / 255 for img, _ in pairs])
    y = torch.cat([m.reshape(-1) for _, m in pairs])
    torch.manual_seed(0)
    keep = torch.randperm(len(y))[:6000]
    x, y = x[keep], y[keep]
    model = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert (model(x).argmax(1) == y).float().mean() > 0.9


def test_vectorised_colour_decode_equals_naive():
    rng = np.random.default_rng(0)
    rows = [TableRow(f"c{i}", tuple(int(v) for v in rng.integers(0, 255, 3))) for i in range(20)]
    decoder = color_decoder(rows)
    picks = rng.integers(0, 20, (30, 40))
    raw = np.asarray([r.color for r in rows], np.uint8)[picks]
    colors = np.asarray([r.color for r in rows], np.uint8)
    np.testing.assert_array_equal(
        decoder.decode_array(raw), naive_color_decode(raw, colors, np.arange(20))
    )


def test_cli_inspect_and_check_json(synthetic):
    runner = CliRunner()
    result = runner.invoke(
        app, ["data", "inspect", f"folder:{synthetic}", "--weights", "enet", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["splits"] == {"train": 9, "val": 3, "test": 3} and doc["num_classes"] == 5
    assert math.isclose(sum(c["share"] for c in doc["classes"]), 1.0, rel_tol=1e-6)
    assert len(doc["weights"]["values"]) == 5
    ok = runner.invoke(app, ["data", "check", f"folder:{synthetic}", "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["ok"] is True
    bad = runner.invoke(app, ["data", "check", "camvid:/nonexistent/path"])
    assert bad.exit_code == 1


def test_inspect_and_check_from_python_report_progress(synthetic):
    calls = []
    doc = inspect_source(
        f"folder:{synthetic}", "val", "enet", {"c": 1.1},
        progress=lambda *call: calls.append(call),
    )
    assert calls == [("counting val", i, 3) for i in range(1, 4)]
    stats = compute_pixel_stats(open_source(f"folder:{synthetic}").dataset("val"))
    assert [c["pixels"] for c in doc["classes"]] == stats.counts.tolist()
    assert doc["weights"]["params"] == {"c": 1.1} and doc["split"] == "val"
    assert json.loads(json.dumps(doc)) == doc  # plain data, no numpy or paths
    # The CLI prints the library's document unchanged.
    cli = CliRunner().invoke(
        app, ["data", "inspect", f"folder:{synthetic}", "--split", "val", "--weights",
              "enet", "--weight-param", "c=1.1", "--json"]
    )
    assert cli.exit_code == 0 and json.loads(cli.stdout) == doc

    calls.clear()
    report = check_source(f"folder:{synthetic}", progress=lambda *call: calls.append(call))
    assert report["ok"] and report["pairs_checked"] == 15
    assert calls[-1] == ("checking test", 3, 3) and len(calls) == 15
    assert {task for task, _, _ in calls} == {"checking train", "checking val", "checking test"}
