"""Hugging Face Hub round trip without the network: a run pushed to a folder laid out as its
repo, placed in a Hub cache as a snapshot, loaded by repo id in offline mode; the model card;
uploads through a stand-in HfApi; the weights probe honours offline mode and proxies."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from seglab.artifacts import hub, rundir
from seglab.artifacts.model_card import CARD_FILE, MARKER, write_model_card
from seglab.artifacts.pretrained import save_pretrained
from seglab.cli.main import app
from seglab.config import Recipe
from seglab.data.classes import ClassMap
from seglab.data.synthetic import make_synthetic
from seglab.engine.evaluation import evaluate
from seglab.engine.loggers import write_curves
from seglab.errors import ConfigError, ModelError
from seglab.models.registry import build_model

REPO = "seglab-test/tiny-unet"
NAMES = ("background", "disc", "box|lid")  # a '|' must not break the card's tables
COLORS = ((0, 0, 0), (220, 60, 50), (50, 110, 220))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder (untrained weights, real evaluation) without a training loop."""
    root = tmp_path_factory.mktemp("hub")
    data = make_synthetic(root / "data", n_train=2, n_val=0, n_test=3, size=(24, 32),
                          num_classes=3)
    recipe = Recipe.from_dict({
        "name": "tiny_unet", "data": {"spec": f"folder:{data}", "num_workers": 0},
        "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}},
    })
    folder = root / "runs" / "tiny_unet"
    folder.mkdir(parents=True)
    recipe.to_yaml(rundir.recipe_path(folder))
    rundir.history_path(folder).write_text(
        "epoch,train_loss,val_loss,val_miou,val_pixel_acc,lr,time_s\n"
        "1,1.1,1.0,0.30,0.7,0.01,2.0\n2,0.9,0.8,0.42,0.8,0.005,4.0\n")
    write_curves(rundir.history_path(folder), folder / "curves.png")
    torch.manual_seed(0)
    model = build_model("unet", 3, base_channels=4, depth=2)
    classmap = ClassMap(names=NAMES, colors=COLORS)
    save_pretrained(model, rundir.model_dir(folder), classmap=classmap,
                    extra={"recipe": recipe.to_dict()})
    evaluate(rundir.model_dir(folder), f"folder:{data}", "test", out_dir=folder, num_workers=0,
             num_panels=0, precision="fp32")
    write_model_card(rundir.model_dir(folder), run_dir=folder)
    return folder


def _into_cache(staged: Path, hf_home: Path, repo_id: str) -> Path:
    """Place a repo's files in a Hub cache as huggingface_hub lays it out (blobs, refs, links)."""
    repo_dir = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for item in staged.iterdir():
        data = item.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / item.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


def test_repo_ids_and_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert hub.parse_repo_id("org/name") == ("org/name", None)
    assert hub.parse_repo_id("hf://org/name@v1.0") == ("org/name", "v1.0")
    assert hub.parse_repo_id(Path("hf://org/name")) == ("org/name", None)  # CLI Path arguments
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert hub.parse_repo_id("org/name") is None  # an existing local folder wins
    assert hub.parse_repo_id("hf://org/name") == ("org/name", None)  # unless hf:// says so
    for local in ("./x/y", "/abs/path", "a/b/c", "model.onnx", "runs/x.ckpt/.."):
        assert hub.parse_repo_id(local) is None, local
    with pytest.raises(ConfigError, match="not a Hugging Face repo id"):
        hub.parse_repo_id("hf://org--bad/name")
    with pytest.raises(ConfigError, match="not a Hub repo id"):
        hub.push_to_hub(tmp_path, "no-slash")


def test_push_to_a_folder_then_load_by_repo_id_offline(run: Path, tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    result = CliRunner().invoke(app, ["push", str(run), REPO, "--to-dir", str(staged), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["uploaded"] is False and doc["files"] == sorted(
        ["README.md", "config.json", "model.safetensors", "metrics.json", "per_class.csv",
         "history.csv", "curves.png"])
    card = (staged / CARD_FILE).read_text()
    assert f'Predictor("{REPO}")' in card
    assert "![loss, val mIoU and learning rate](curves.png)" in card
    hf_home = tmp_path / "hf"
    _into_cache(staged, hf_home, REPO)
    not_seglab = tmp_path / "plain"
    not_seglab.mkdir()
    (not_seglab / "README.md").write_text("# not a seglab model\n")
    _into_cache(not_seglab, hf_home, "seglab-test/plain")
    image = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)
    script = f"""
import json, numpy as np, seglab
from seglab.errors import SeglabError
model, config = seglab.from_pretrained({REPO!r})
predictor = seglab.Predictor({REPO!r})
out = {{"classes": list(predictor.class_names), "source": str(predictor.source),
        "mask": predictor.predict(np.load({str(tmp_path / "image.npy")!r})).tolist()}}
for repo in ("seglab-test/missing", "seglab-test/plain"):
    try:
        seglab.from_pretrained(repo)
    except SeglabError as exc:
        out[repo] = str(exc)
print(json.dumps(out))
"""
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["classes"] == list(NAMES)
    assert loaded["source"].startswith(str(hf_home / "hub" / "models--seglab-test--tiny-unet"))
    from seglab import Predictor

    expected = Predictor(rundir.model_dir(run), precision="fp32").predict(image)
    assert np.array_equal(np.array(loaded["mask"]), expected)
    missing = loaded["seglab-test/missing"]
    assert "offline mode (HF_HUB_OFFLINE) is on" in missing and str(hf_home) in missing
    assert "holds no seglab model: config.json is missing" in loaded["seglab-test/plain"]


def test_model_card_contents(run: Path) -> None:
    card = (rundir.model_dir(run) / CARD_FILE).read_text()
    metrics = rundir.read_metrics(run)
    assert card.startswith("---\nlibrary_name: seglab\npipeline_tag: image-segmentation\n")
    assert MARKER in card and "# tiny_unet" in card
    assert "| 1 | disc | #dc3c32 (220, 60, 50) |" in card
    assert "| 2 | box\\|lid | #326edc (50, 110, 220) |" in card
    assert f"| mIoU | {100 * metrics['miou']:.2f} |" in card
    assert "mean_iou" in card and f"value: {round(metrics['miou'], 4)}" in card
    assert "images/s" in card  # evaluation speed from metrics.json
    assert "](../curves.png)" in card and "```yaml\nname: tiny_unet" in card
    assert "unet" in card and "3 classes" in card


def test_save_pretrained_writes_a_card_without_metrics(tmp_path: Path) -> None:
    model = build_model("unet", 2, base_channels=4, depth=2)
    folder = save_pretrained(model, tmp_path / "m")
    card = (folder / CARD_FILE).read_text()
    assert "Not evaluated yet" in card and "No training recipe" in card
    assert "2 classes (no names were saved" in card


class _FakeApi:
    """Stands in for huggingface_hub.HfApi: records calls, keeps the uploaded files."""

    def __init__(self, remote: Path, status: int | None = None) -> None:
        self.remote, self.status, self.calls = remote, status, []

    def create_repo(self, repo_id: str, **kwargs) -> None:
        self.calls.append(("create_repo", repo_id, kwargs))
        if self.status is not None:
            from huggingface_hub.utils import HfHubHTTPError

            response = type("Response", (), {"status_code": self.status, "headers": {},
                                             "request": None})()
            raise HfHubHTTPError(f"{self.status} Client Error: Unauthorized", response=response)

    def create_branch(self, repo_id: str, **kwargs) -> None:
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, *, repo_id: str, folder_path: str, **kwargs):
        self.calls.append(("upload_folder", repo_id, kwargs))
        for item in Path(folder_path).iterdir():
            (self.remote / item.name).write_bytes(item.read_bytes())
        return type("Info", (), {"commit_url": f"https://hub.example/{repo_id}/commit/1"})()


def test_push_uploads_through_the_api(run: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    remote = tmp_path / "remote"
    remote.mkdir()
    api = _FakeApi(remote)
    url = hub.push_to_hub(rundir.model_dir(run), REPO, private=True, revision="v1", api=api)
    assert url == f"https://hub.example/{REPO}/commit/1"
    assert [c[0] for c in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][2]["private"] is True and api.calls[2][2]["revision"] == "v1"
    assert (remote / "model.safetensors").read_bytes() == (
        rundir.model_dir(run) / "model.safetensors").read_bytes()
    assert (remote / "metrics.json").is_file()  # model/ of a run brings the run's files
    with pytest.raises(ModelError, match="refused to write to .*HF_TOKEN"):
        hub.push_to_hub(run, REPO, api=_FakeApi(remote, status=401))
    no_token = _FakeApi(remote)
    no_token.create_repo = lambda *a, **k: (_ for _ in ()).throw(  # as HfApi without a login
        hub._no_token_error()("Token is required (`token=True`), but no token found."))
    with pytest.raises(ModelError, match="needs a Hub token with write access"):
        hub.push_to_hub(run, REPO, api=no_token)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="offline mode .* --to-dir"):
        hub.push_to_hub(run, REPO, api=api)
    with pytest.raises(ConfigError, match="neither a model folder"):
        hub.push_to_hub(tmp_path, REPO, local_dir=tmp_path / "out")


def test_a_hand_written_card_is_kept(run: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        (model / name).write_bytes((rundir.model_dir(run) / name).read_bytes())
    (model / CARD_FILE).write_text("# My own card\n")
    staged = Path(hub.push_to_hub(model, REPO, local_dir=tmp_path / "staged"))
    assert (staged / CARD_FILE).read_text() == "# My own card\n"
    with pytest.raises(ConfigError, match="not empty"):
        hub.push_to_hub(model, REPO, local_dir=staged)


def test_weights_probe_offline_and_through_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    from seglab.models import backbones

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert backbones._hub_reachable() is False
    assert "HF_HUB_OFFLINE" in backbones._PROBE["problem"]
    monkeypatch.delenv("HF_HUB_OFFLINE")
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        pytest.skip("HF_HUB_OFFLINE was set when huggingface_hub was imported")
    close = getattr(huggingface_hub, "close_session", None)
    if close is None:
        pytest.skip("this huggingface_hub cannot rebuild its session")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    seen: list[str] = []

    def answer() -> None:  # a proxy that refuses every tunnel, after noting what was asked
        conn, _ = server.accept()
        with conn:
            seen.append(conn.recv(4096).decode("latin-1").splitlines()[0])
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    port = server.getsockname()[1]
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:secret@127.0.0.1:{port}")
    close()  # the session is built again, from these settings
    try:
        assert backbones._hub_reachable() is False
    finally:
        monkeypatch.delenv("HTTPS_PROXY")
        close()
        server.close()
    thread.join(5)
    host = huggingface_hub.constants.ENDPOINT.split("://", 1)[-1].rstrip("/")
    assert seen and seen[0].startswith(f"CONNECT {host}:443")
    problem = backbones._PROBE["problem"]
    assert f"through the proxy http://127.0.0.1:{port}" in problem and "secret" not in problem
