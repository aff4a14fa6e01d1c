"""seglab.predict and `seglab predict`: Python API types, real images, bad files, videos."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from seglab.cli.main import app
from seglab.data.classes import ClassMap
from seglab.errors import ConfigError, ModelError
from seglab.predict import Predictor, collect_inputs, predict_paths
from seglab.viz import overlay

CAMVID_NAMES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)  # fmt: skip
CAMVID_COLORS = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip
CLASSMAP = ClassMap(CAMVID_NAMES, CAMVID_COLORS, ignore_index=11)
MODEL_NAME = "lraspp_mobilenetv3_small"  # timm: small, and untrained it still varies


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A small, untrained model saved the way training saves one (run folder with model/)."""
    from seglab.artifacts.pretrained import save_pretrained
    from seglab.models import build_model

    torch.manual_seed(0)
    model = build_model(MODEL_NAME, num_classes=CLASSMAP.num_classes)
    run = tmp_path_factory.mktemp("run")
    save_pretrained(model, run / "model", classmap=CLASSMAP, mean=(0.4, 0.4, 0.4), std=(0.3,) * 3)
    return run


@pytest.fixture(scope="module")
def predictor(model_dir) -> Predictor:
    return Predictor(model_dir, device="cpu")


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- Python API ------------------------------------------------------------------------------


def test_predictor_reads_classes_and_normalisation_from_the_run(predictor, model_dir):
    assert predictor.class_names == CAMVID_NAMES
    assert predictor.num_classes == 11
    assert predictor.mean == pytest.approx((0.4, 0.4, 0.4))
    assert predictor.std == pytest.approx((0.3, 0.3, 0.3))
    assert predictor.source == model_dir / "model"
    assert MODEL_NAME in repr(predictor)


def test_numpy_in_numpy_out_at_the_original_odd_size(predictor):
    mask = predictor.predict(_rgb(45, 67))
    assert isinstance(mask, np.ndarray)
    assert mask.shape == (45, 67)
    assert mask.dtype == np.int64
    assert 0 <= mask.min() and mask.max() < 11


def test_tensor_in_tensor_out_matches_numpy(predictor):
    rgb = _rgb(40, 52, seed=1)
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
    mask_t = predictor.predict(tensor)
    assert isinstance(mask_t, torch.Tensor)
    assert mask_t.shape == (40, 52)
    assert mask_t.dtype == torch.int64
    np.testing.assert_array_equal(mask_t.numpy(), predictor.predict(rgb))


def test_pil_and_path_inputs_give_numpy(predictor, tmp_path):
    rgb = _rgb(30, 34, seed=2)
    path = tmp_path / "photo.png"
    Image.fromarray(rgb).save(path)
    expected = predictor.predict(rgb)
    np.testing.assert_array_equal(predictor.predict(Image.fromarray(rgb)), expected)
    np.testing.assert_array_equal(predictor.predict(path), expected)
    np.testing.assert_array_equal(
        predictor.predict(rgb[..., 0]), predictor.predict(np.repeat(rgb[..., :1], 3, axis=-1))
    )


def test_predict_proba_is_a_distribution_consistent_with_predict(predictor):
    rgb = _rgb(33, 41, seed=3)
    proba = predictor.predict_proba(rgb)
    assert proba.shape == (11, 33, 41)
    assert proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(proba.argmax(0), predictor.predict(rgb))
    proba_t = predictor.predict_proba(torch.from_numpy(rgb).permute(2, 0, 1))
    assert isinstance(proba_t, torch.Tensor) and proba_t.shape == (11, 33, 41)


def test_predict_batch_keeps_types_and_sizes(predictor):
    images = [_rgb(32, 48, seed=4), _rgb(21, 17, seed=5), _rgb(32, 48, seed=6)]
    masks = predictor.predict_batch(images)
    assert [m.shape for m in masks] == [(32, 48), (21, 17), (32, 48)]
    for image, mask in zip(images, masks, strict=True):
        np.testing.assert_array_equal(mask, predictor.predict(image))
    stacked = torch.from_numpy(np.stack([images[0], images[2]])).permute(0, 3, 1, 2)
    batch_t = predictor.predict_batch(stacked)
    assert isinstance(batch_t, torch.Tensor) and batch_t.shape == (2, 32, 48)
    batch_np = predictor.predict_batch(np.stack([images[0], images[2]]))
    assert isinstance(batch_np, np.ndarray) and batch_np.shape == (2, 32, 48)
    np.testing.assert_array_equal(batch_np, batch_t.numpy())


def test_slide_mode_and_tta_answer_at_full_size(model_dir):
    slide = Predictor(model_dir, mode="slide", crop=(32, 32), flip=True, scales=(0.75, 1.0))
    mask = slide.predict(_rgb(50, 70, seed=7))
    assert mask.shape == (50, 70)


def test_saved_inference_settings_are_defaults_that_arguments_override(tmp_path):
    from seglab.artifacts.pretrained import save_pretrained
    from seglab.models import build_model

    inference = {"size": [40, 56], "mode": "slide", "crop": [24, 24], "stride": None}
    model = build_model(MODEL_NAME, num_classes=CLASSMAP.num_classes)
    save_pretrained(model, tmp_path / "m", classmap=CLASSMAP, extra={"inference": inference})
    saved = Predictor(tmp_path / "m")
    assert (saved.mode, saved.crop, saved.stride, saved.size) == ("slide", [24, 24], None, [40, 56])
    assert saved.predict(_rgb(50, 70)).shape == (50, 70)
    mine = Predictor(tmp_path / "m", mode="whole", size=(64, 64))
    assert (mine.mode, mine.size) == ("whole", (64, 64))


def test_bad_images_and_sources_get_clear_errors(predictor, model_dir, tmp_path):
    with pytest.raises(ConfigError, match="uint8"):
        predictor.predict(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ConfigError, match="channels first"):
        predictor.predict(torch.zeros(8, 8, 3, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="model not found"):
        Predictor(tmp_path / "missing")
    with pytest.raises(ConfigError, match="neither a model folder"):
        Predictor(tmp_path)
    with pytest.raises(ConfigError, match="crop"):
        Predictor(model_dir, mode="slide")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match="unknown model file type"):
        Predictor(tmp_path / "weights.bin")
    # A .pt that is not TorchScript is a state dict (issue 26): it needs the architecture
    # to load into, and the error names the file and the option.
    torch.save({"weight": torch.zeros(2)}, tmp_path / "weights.pt")
    with pytest.raises(ConfigError, match=r"weights\.pt holds weights only.*--model NAME"):
        Predictor(tmp_path / "weights.pt")


# --- Lightning checkpoints of the training engine --------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real Lightning checkpoint of seglab.engine's module (no training needed)."""
    import lightning as L

    from seglab.config import Recipe
    from seglab.engine.module import SegmentationModule

    recipe = Recipe(
        data={"spec": "folder:/nowhere", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)},
        model={"name": MODEL_NAME},
        augment={"eval_resize": (40, 56)},
        eval={"mode": "slide", "crop": (24, 24)},
    )
    torch.manual_seed(1)
    module = SegmentationModule(recipe.to_dict(), CLASSMAP.to_dict())
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    path = tmp_path_factory.mktemp("run") / "checkpoints" / "best.ckpt"
    path.parent.mkdir()
    trainer.save_checkpoint(path)
    return path


def test_checkpoint_loads_with_its_classes_normalisation_and_eval_settings(checkpoint):
    from seglab.engine.inference import predict_logits

    for source in (checkpoint, checkpoint.parent.parent):  # the .ckpt, or its run folder
        predictor = Predictor(source)
        assert predictor.source == checkpoint
        assert predictor.class_names == CAMVID_NAMES
        assert predictor.mean == (0.5, 0.5, 0.5) and predictor.std == (0.25, 0.25, 0.25)
        assert (predictor.mode, predictor.crop, predictor.size) == ("slide", [24, 24], [40, 56])
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    torch.testing.assert_close(predictor.model.state_dict(), weights)
    image = _rgb(50, 70, seed=8)
    probs = predict_logits(
        predictor.model,
        torch.from_numpy(image).permute(2, 0, 1)[None],
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        mode="slide",
        crop=24,
        size=(40, 56),
    )
    np.testing.assert_array_equal(predictor.predict(image), probs[0].argmax(0).numpy())
    assert Predictor(checkpoint, mode="whole", size=(50, 70)).predict(image).shape == (50, 70)


def test_a_foreign_or_corrupt_checkpoint_is_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ModelError, match="not a seglab training checkpoint"):
        Predictor(tmp_path / "other.ckpt")
    (tmp_path / "cut.ckpt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        Predictor(tmp_path / "cut.ckpt")


# --- files, folders and the CLI --------------------------------------------------------------


@pytest.fixture()
def photo_folder(shared_data, tmp_path) -> Path:
    """Three real CamVid test images (links) and one corrupt PNG in a nested folder."""
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    test_dir = shared_data / "camvid11" / "test"
    names = sorted(p.name for p in test_dir.glob("*.png"))[:3]
    for name in names[:2]:
        (folder / name).symlink_to(test_dir / name)
    (folder / "nested" / names[2]).symlink_to(test_dir / names[2])
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    (folder / "notes.txt").write_text("ignored: not an image")
    return folder


def test_predict_cli_on_real_images_writes_checked_outputs(model_dir, photo_folder, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "predict", str(model_dir), str(photo_folder), "--out", str(out),
            "--save", "mask,color,overlay,proba", "--alpha", "0.4", "--batch", "2",
            "--device", "cpu", "--json",
        ],
    )  # fmt: skip
    # The corrupt file is reported and skipped: the run goes on, then exits non-zero.
    assert result.exit_code == 1, result.output
    assert "broken.png" in result.stderr
    document = json.loads(result.stdout)
    assert document["num_images"] == 3
    assert [Path(f["input"]).name for f in document["failed"]] == ["broken.png"]
    assert "decode" in document["failed"][0]["error"]

    palette = CLASSMAP.palette()
    for item in document["items"]:
        source = np.asarray(Image.open(item["input"]).convert("RGB"))
        assert item["size"] == [360, 480] == list(source.shape[:2])
        assert sum(item["class_shares"].values()) == pytest.approx(1.0, abs=1e-4)
        mask = np.asarray(Image.open(item["outputs"]["mask"]))
        assert mask.shape == (360, 480) and mask.dtype == np.uint8
        assert mask.max() < CLASSMAP.num_classes
        color = np.asarray(Image.open(item["outputs"]["color"]).convert("RGB"))
        np.testing.assert_array_equal(color, palette[mask])
        blended = np.asarray(Image.open(item["outputs"]["overlay"]).convert("RGB"))
        np.testing.assert_array_equal(blended, overlay(source, mask, palette, alpha=0.4))
        with np.load(item["outputs"]["proba"]) as npz:
            proba = npz["proba"].astype(np.float32)
            assert list(npz["classes"]) == list(CAMVID_NAMES)
        assert proba.shape == (11, 360, 480)
        np.testing.assert_allclose(proba.sum(0), 1.0, atol=1e-2)
        assert (proba.argmax(0) == mask).mean() > 0.99
        shares = np.bincount(mask.ravel(), minlength=11) / mask.size
        assert item["class_shares"]["Road"] == pytest.approx(shares[3], abs=1e-6)
    # Folder structure is kept; nothing half-written is left behind.
    assert (out / "mask" / "nested").is_dir()
    assert not list(out.rglob("*.tmp"))
    assert len(list((out / "mask").rglob("*.png"))) == 3


def test_predict_paths_matches_the_predictor(predictor, shared_data, tmp_path):
    image = sorted((shared_data / "camvid11" / "test").glob("*.png"))[5]
    summary = predict_paths(predictor, [image], tmp_path / "out", save="mask")
    assert summary.ok and len(summary.items) == 1
    written = np.asarray(Image.open(tmp_path / "out" / "mask" / f"{image.stem}.png"))
    np.testing.assert_array_equal(written, predictor.predict(image))


def test_an_unwritable_output_folder_stops_with_a_clear_error(predictor, tmp_path):
    from seglab.errors import SeglabError

    Image.fromarray(_rgb(16, 16)).save(tmp_path / "x.png")
    (tmp_path / "out").write_text("a file where the output folder should go")
    with pytest.raises(SeglabError, match="cannot write"):
        predict_paths(predictor, [tmp_path / "x.png"], tmp_path / "out")


def test_collect_inputs_expands_globs_and_refuses_typos(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.fromarray(_rgb(8, 8)).save(tmp_path / sub / "same.png")
    found = collect_inputs([str(tmp_path / "*" / "*.png")])
    assert [f.name for f in found] == ["same", "same_1"]  # equal names do not overwrite
    assert [f.name for f in collect_inputs([tmp_path])] == ["a/same", "b/same"]
    assert collect_inputs([tmp_path], exclude=tmp_path / "b")[0].name == "a/same"
    with pytest.raises(ConfigError, match="input not found"):
        collect_inputs([tmp_path / "nope.png"])
    with pytest.raises(ConfigError, match="matches no images"):
        collect_inputs([str(tmp_path / "*.jpg")])


def test_cli_refuses_bad_options_without_a_traceback(model_dir, tmp_path):
    Image.fromarray(_rgb(8, 8)).save(tmp_path / "x.png")
    runner = CliRunner()
    base = ["predict", str(model_dir), str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]
    for extra, message in (
        (["--save", "mask,heatmap"], "heatmap"),
        (["--crop", "big"], "--crop"),
        (["--mode", "slide"], "crop"),
        (["--device", "tpu"], "device"),
    ):
        result = runner.invoke(app, base + extra)
        assert result.exit_code == 1, result.output
        assert message in result.stderr
        assert "Traceback" not in result.output


# --- video -----------------------------------------------------------------------------------


def _write_video(path: Path, frames: int, width: int, height: int, fps: int = 12) -> None:
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(fps, 1))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(
                rng.integers(0, 256, (height, width, 3), dtype=np.uint8), format="rgb24"
            )
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _read_video(path: Path) -> tuple[int, tuple[int, int], float]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        shapes = {frame.to_ndarray(format="rgb24").shape for frame in container.decode(stream)}
        count = stream.frames
        rate = float(stream.average_rate)
    assert len(shapes) == 1
    return count, shapes.pop()[:2], rate


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_round_trips_to_an_overlay_video(predictor, tmp_path, suffix):
    video = tmp_path / f"drive{suffix}"
    _write_video(video, frames=7, width=64, height=48)
    summary = predict_paths(predictor, [video], tmp_path / "out")
    assert summary.ok, summary.failed
    (item,) = summary.items
    assert item["kind"] == "video" and item["frames"] == 7
    count, size, rate = _read_video(Path(item["outputs"]["video"]))
    assert (count, size) == (7, (48, 64))
    assert rate == pytest.approx(12.0)
    assert sum(item["class_shares"].values()) == pytest.approx(1.0, abs=1e-4)


def test_corrupt_video_is_skipped_and_images_still_run(predictor, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    Image.fromarray(_rgb(20, 24)).save(tmp_path / "in" / "good.png")
    summary = predict_paths(predictor, [tmp_path / "in"], tmp_path / "out")
    assert [Path(f["input"]).name for f in summary.failed] == ["bad.mp4"]
    assert [Path(i["input"]).name for i in summary.items] == ["good.png"]
    assert not (tmp_path / "out" / "video").exists() or not list(
        (tmp_path / "out" / "video").iterdir()
    )
