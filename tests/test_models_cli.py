"""`seglab models list` and `seglab models show`."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from seglab.cli.main import app
from seglab.models import model_names

runner = CliRunner()


def test_list_json_has_every_model_with_params():
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    rows = {row["name"]: row for row in doc["models"]}
    # Fixed names plus the smp:/hf: families' examples.
    assert set(model_names()) <= set(rows)
    assert {"smp:unetplusplus/resnet34", "hf:segformer"} <= set(rows)
    assert rows["lraspp_mobilenet_v3_large"]["params_m"] == 3.22
    assert rows["deeplabv3_resnet50"]["weights"] == ["coco_voc"]
    assert rows["unet"]["gflops"] is None  # only with --flops


def test_list_flops_for_one_family_at_a_given_size():
    result = runner.invoke(
        app, ["models", "list", "--json", "--flops", "--family", "lraspp", "--input", "520x520"]
    )
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)["models"]}
    assert rows["lraspp_mobilenet_v3_large"]["gflops"] == 2.09  # torchvision: 2.086
    assert {row["family"] for row in rows.values()} == {"lraspp"}


def test_list_table_is_readable():
    result = runner.invoke(app, ["models", "list", "--family", "pspnet"])
    assert result.exit_code == 0, result.output
    assert "pspnet_resnet50" in result.stdout and "imagenet (backbone)" in result.stdout


def test_show_layer_table_with_freeze():
    result = runner.invoke(app, ["models", "show", "lraspp_mobilenet_v3_large", "--num-classes",
                                 "11", "--freeze", "last:1", "--input", "360x480", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["outputs"] == {"out": [1, 11, 360, 480]}
    layers = {row["name"]: row for row in doc["layers"]}
    assert layers["backbone.16"]["trainable"] == layers["backbone.16"]["params"] > 0
    assert layers["backbone.15"]["trainable"] == 0
    assert layers["backbone.0"]["input_shape"] == "1x3x360x480"
    assert layers["backbone.0"]["output_shape"] == "1x16x180x240"
    assert doc["trainable_params"] < doc["total_params"]

    table = runner.invoke(app, ["models", "show", "pspnet_resnet18", "--input", "97x131"])
    assert table.exit_code == 0, table.output
    assert "trainable parameters" in table.stdout and "1x21x97x131" in table.stdout


def test_show_accepts_model_options():
    result = runner.invoke(app, ["models", "show", "pspnet", "-o", "backbone=resnet18",
                                 "-o", "bins=[1,2]", "-o", "aux=false", "--json", "--input", "64",
                                 "--depth", "4"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["outputs"] == {"out": [1, 21, 64, 64]}
    assert len([r for r in doc["layers"] if r["name"].startswith("head.ppm.branches.")]) == 2


def test_errors_exit_1_without_traceback():
    for args in (["models", "show", "nope"], ["models", "show", "unet", "--freeze", "last:x"],
                 ["models", "list", "--flops", "--input", "big"],
                 ["models", "show", "unet", "-o", "base_channels"],
                 ["models", "show", "unet", "-o", "colour=red"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1
        assert "Traceback" not in result.output
