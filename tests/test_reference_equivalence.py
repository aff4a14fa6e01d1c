"""seglab's real-time zoo against its authors' reference implementations.

The references live in ``../shared/reference-models`` (third-party code kept as a test oracle,
never copied into seglab). Each test builds a reference with random weights and randomised
BatchNorm statistics, saves its state dict as the authors' checkpoints are saved, loads that
file with ``build_model(name, num_classes, weights=PATH)`` (seglab's own converter), and
requires the same main logits (max abs diff < 1e-5) in eval mode, and the same parameter count.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import ModelError
from seglab.models.registry import build_model

REF = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference-models"
pytestmark = pytest.mark.skipif(not REF.is_dir(),
                                reason=f"reference implementations not found at {REF}")
NUM_CLASSES = 11
TOLERANCE = 1e-5


def load_ref(network: str, module: str):
    """Import ``module`` of one reference folder (several share the package names models/nets)."""
    for name in [k for k in sys.modules if k.split(".")[0] in ("models", "nets")]:
        del sys.modules[name]
    folder = str(REF / network)
    sys.path.insert(0, folder)
    sys.dont_write_bytecode, before = True, sys.dont_write_bytecode
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(folder)
        sys.dont_write_bytecode = before


def randomise(model: nn.Module, x: torch.Tensor, seed: int = 0) -> nn.Module:
    """Random biases, BatchNorm affine terms (either sign) and PReLU slopes (the references
    initialise them to constants, which would hide a mismatched mapping), then BatchNorm
    statistics measured on a batch of two inputs of ``x``'s size and perturbed at random, so
    the logits have realistic magnitudes. STDC's InPlaceABN stand-in counts as a BatchNorm."""
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules()
             if isinstance(getattr(m, "running_var", None), torch.Tensor)]
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 1 and name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
            elif param.dim() == 1:
                sign = torch.randint(0, 2, param.shape, generator=gen) * 2 - 1
                param.copy_((torch.rand(param.shape, generator=gen) + 0.5) * sign)
        for bn in norms:
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0)
            bn.momentum = 1.0  # the running statistics become the calibration batch's
        model.train()(torch.randn(2, *x.shape[1:], generator=gen))
        for bn in norms:
            c = bn.running_var.numel()
            std = bn.running_var.sqrt()
            bn.running_mean.add_(torch.randn(c, generator=gen) * 0.2 * std)
            bn.running_var.mul_(torch.rand(c, generator=gen) * 0.6 + 0.7)
            bn.momentum = 0.1
    return model.eval()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(tmp_path: Path, state: dict, name: str = "authors.pth") -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


def upsample(logits: torch.Tensor, size: tuple[int, int], align_corners: bool = False):
    """The authors' evaluation: logits resized bilinearly to the input size."""
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)


def assert_same_logits(ours: nn.Module, reference_out: torch.Tensor, x: torch.Tensor) -> None:
    with torch.no_grad():
        out = ours.eval()(x)["out"]
    assert out.shape == reference_out.shape
    diff = (out - reference_out).abs().max().item()
    assert diff < TOLERANCE, f"max abs diff {diff:.3g} between seglab and the reference"


# --- CGNet ---------------------------------------------------------------------------------

def test_cgnet_matches_the_authors_code(tmp_path):
    x = torch.randn(1, 3, 75, 101)  # odd sizes: the authors' code does not pad
    ref = randomise(load_ref("cgnet", "CGNet").Context_Guided_Network(classes=NUM_CLASSES), x)
    # the authors' train.py saves {"epoch", "model"} of a DataParallel model
    path = save_checkpoint(tmp_path, {"epoch": 1, "model": {
        f"module.{k}": v for k, v in ref.state_dict().items()}})
    ours = build_model("cgnet", NUM_CLASSES, weights=str(path))
    assert count_params(ours) == count_params(ref) == 494_258
    with torch.no_grad():
        expected = ref(x)
    assert_same_logits(ours, expected, x)


def test_cgnet_old_conventions_stay_one_option_away():
    model = build_model("cgnet", 3, bn_eps=1e-5, classifier_bias=True, pad=True)
    assert model.pad and model.classifier[1].bias is not None
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_a_foreign_tensor_is_named(tmp_path):
    ref = load_ref("cgnet", "CGNet").Context_Guided_Network(classes=NUM_CLASSES)
    state = dict(ref.state_dict())
    state["level9.conv.weight"] = torch.zeros(1)
    with pytest.raises(ModelError, match="'level9.conv.weight' matches no layer"):
        build_model("cgnet", NUM_CLASSES, weights=str(save_checkpoint(tmp_path, state)))
    state.pop("level9.conv.weight")
    with pytest.raises(ModelError, match="'classifier.0.conv.weight' .* does not fit"):
        build_model("cgnet", 4, weights=str(save_checkpoint(tmp_path, state)))
    with pytest.raises(ModelError, match="without a value, the first 'classifier.1.bias'"):
        build_model("cgnet", NUM_CLASSES, classifier_bias=True,
                    weights=str(save_checkpoint(tmp_path, state)))


# --- DDRNet --------------------------------------------------------------------------------

DDRNET = {"ddrnet23_slim": ("DDRNet_23_slim", 32, 64, 5_695_467, 5_733_302),
          "ddrnet23": ("DDRNet_23", 64, 128, 20_147_915, 20_297_302)}


@pytest.mark.parametrize("name", sorted(DDRNET))
def test_ddrnet_matches_the_authors_code(name, tmp_path):
    module, planes, head, params, params_aux = DDRNET[name]
    ref_module = load_ref(name, module)
    # The authors' code needs H and W multiples of 8 (it resizes to H // 8 and adds): the
    # nearest valid sizes to an odd 75x101; their evaluation upsamples the 1/8 logits.
    x = torch.randn(1, 3, 72, 104)
    ref = randomise(ref_module.DualResNet(ref_module.BasicBlock, [2, 2, 2, 2],
                                          num_classes=NUM_CLASSES, planes=planes,
                                          spp_planes=128, head_planes=head, augment=True), x)
    # their training wrapper saves "model."-prefixed keys beside the loss's class weights
    state = {f"model.{k}": v for k, v in ref.state_dict().items()}
    state["loss.criterion.weight"] = torch.ones(NUM_CLASSES)
    path = save_checkpoint(tmp_path, {"state_dict": state})
    with torch.no_grad():
        main, extra = ref(x)
    ours = build_model(name, NUM_CLASSES, weights=str(path))  # the aux head is left out
    assert count_params(ours) == params
    assert_same_logits(ours, upsample(main, x.shape[-2:]), x)
    with_aux = build_model(name, NUM_CLASSES, aux=True, weights=str(path)).eval()
    assert count_params(with_aux) == count_params(ref) == params_aux
    with torch.no_grad():
        aux = with_aux(x)["aux"]
    assert (aux - upsample(extra, x.shape[-2:])).abs().max() < TOLERANCE


# --- PIDNet --------------------------------------------------------------------------------

def test_pidnet_s_matches_the_authors_code(tmp_path):
    pidnet = load_ref("pidnet_s", "models.pidnet")
    x = torch.randn(1, 3, 72, 104)  # multiples of 8, as the authors' code needs (see DDRNet)
    ref = randomise(pidnet.PIDNet(m=2, n=3, num_classes=NUM_CLASSES, planes=32, ppm_planes=96,
                                  head_planes=128, augment=True), x)
    # the published .pt files: the augment=True model inside a wrapper, keys "model."-prefixed
    path = save_checkpoint(tmp_path, {f"model.{k}": v for k, v in ref.state_dict().items()})
    with torch.no_grad():
        extra_p, main, _boundary = ref(x)
    ours = build_model("pidnet_s", NUM_CLASSES, weights=str(path))
    plain = pidnet.get_pred_model("pidnet_s", NUM_CLASSES)  # augment=False: no extra heads
    assert count_params(ours) == count_params(plain) == 7_624_683
    assert_same_logits(ours, upsample(main, x.shape[-2:]), x)
    # with its P-branch head; the boundary head (seghead_d) is not built by seglab
    with_aux = build_model("pidnet_s", NUM_CLASSES, aux=True, weights=str(path)).eval()
    boundary_head = sum(p.numel() for p in ref.seghead_d.parameters())
    assert count_params(with_aux) == count_params(ref) - boundary_head == 7_718_871 - 18_657
    with torch.no_grad():
        aux = with_aux(x)["aux"]
    assert (aux - upsample(extra_p, x.shape[-2:])).abs().max() < TOLERANCE


# --- Fast-SCNN (Tramac's implementation: the authors released no code) ---------------------

def _fastscnn_reference(x: torch.Tensor) -> nn.Module:
    return randomise(load_ref("fastscnn", "fast_scnn").FastSCNN(NUM_CLASSES, aux=True), x)


def test_fastscnn_matches_the_published_implementation(tmp_path):
    # The reference needs H and W multiples of 32 (its fusion upsamples the 1/32 map x4 and
    # adds it to the 1/8 one): 96x128 is the nearest valid size to an odd 75x101.
    x = torch.randn(1, 3, 96, 128)
    ref = _fastscnn_reference(x)
    path = save_checkpoint(tmp_path, ref.state_dict())  # fast_scnn_citys.pth: a plain dict
    with torch.no_grad():
        main, extra = ref(x)
    ours = build_model("fastscnn", NUM_CLASSES, weights=str(path))
    no_aux = load_ref("fastscnn", "fast_scnn").FastSCNN(NUM_CLASSES)
    assert count_params(ours) == count_params(no_aux) == 1_137_019
    assert_same_logits(ours, main, x)
    with_aux = build_model("fastscnn", NUM_CLASSES, aux=True, weights=str(path)).eval()
    assert count_params(with_aux) == count_params(ref)
    with torch.no_grad():
        assert (with_aux(x)["aux"] - extra).abs().max() < TOLERANCE


def test_fastscnn_pads_an_odd_input_and_crops_the_logits(tmp_path):
    # seglab's policy for sizes the network cannot take: zero-pad bottom/right to a multiple
    # of 32, run, crop; the same as the reference on the padded input, cropped.
    x = torch.randn(1, 3, 75, 101)
    padded = F.pad(x, (0, 128 - 101, 0, 96 - 75))
    ref = _fastscnn_reference(padded)
    path = save_checkpoint(tmp_path, ref.state_dict())
    with torch.no_grad():
        expected = ref(padded)[0][..., :75, :101]
    assert_same_logits(build_model("fastscnn", NUM_CLASSES, weights=str(path)), expected, x)


# --- ENet (davidtvs's PyTorch port of the authors' Lua code) -------------------------------

def test_enet_matches_the_published_port(tmp_path):
    x = torch.randn(1, 3, 75, 101)  # odd sizes: every upsampling restores its stage's size
    ref = randomise(load_ref("enet", "enet").ENet(12), x)  # CamVid: 11 classes + unlabeled
    # the published files: {"epoch", "miou", "state_dict", "optimizer"}
    path = save_checkpoint(tmp_path, {"epoch": 1, "miou": 0.5, "state_dict": ref.state_dict(),
                                      "optimizer": {"state": {}, "param_groups": []}})
    ours = build_model("enet", 12, weights=str(path))
    assert count_params(ours) == count_params(ref)
    assert count_params(load_ref("enet", "enet").ENet(NUM_CLASSES)) == 350_508
    with torch.no_grad():
        expected = ref(x)
    assert_same_logits(ours, expected, x)


# --- BiSeNetV2 (CoinCheung's implementation: the authors released no code) -----------------

def _bisenetv2_reference(x: torch.Tensor) -> nn.Module:
    ref = load_ref("bisenetv2", "bisenetv2").BiSeNetV2(n_classes=NUM_CLASSES, aux_mode="train")
    ref = randomise(ref, x)
    ref.aux_mode = "eval"  # what its evaluate.py does after loading
    return ref


def test_bisenetv2_matches_the_published_implementation(tmp_path):
    # multiples of 32 (its aggregation upsamples 1/32 by 4 onto 1/8): nearest to 75x101
    x = torch.randn(1, 3, 96, 128)
    ref = _bisenetv2_reference(x)
    path = save_checkpoint(tmp_path, ref.state_dict())  # with the four boosters, as published
    with torch.no_grad():
        (expected,) = ref(x)
    ours = build_model("bisenetv2", NUM_CLASSES, weights=str(path))
    assert count_params(ours) == 3_350_427
    assert count_params(ref) == 5_212_375  # the reference counts its four boosters
    assert_same_logits(ours, expected, x)
    # one booster is built, on the stage asked for
    with_aux = build_model("bisenetv2", NUM_CLASSES, aux=True, aux_stage=3,
                           weights=str(path)).eval()
    assert count_params(with_aux) == 3_350_427 + count_params(ref.aux3)
    with torch.no_grad():
        aux = with_aux(x)["aux"]
        assert (aux - ref.aux3(ref.segment(x)[1])).abs().max() < TOLERANCE


def test_bisenetv2_pads_an_odd_input_and_crops_the_logits(tmp_path):
    x = torch.randn(1, 3, 75, 101)
    padded = F.pad(x, (0, 128 - 101, 0, 96 - 75))
    ref = _bisenetv2_reference(padded)
    path = save_checkpoint(tmp_path, ref.state_dict())
    with torch.no_grad():
        expected = ref(padded)[0][..., :75, :101]
    assert_same_logits(build_model("bisenetv2", NUM_CLASSES, weights=str(path)), expected, x)


# --- STDC-Seg --------------------------------------------------------------------------------

STDC = {"stdc1": ("STDCNet813", 12_045_856), "stdc2": ("STDCNet1446", 16_076_320)}


@pytest.mark.parametrize("name", sorted(STDC))
def test_stdc_matches_the_authors_code(name, tmp_path):
    backbone, params = STDC[name]
    x = torch.randn(1, 3, 75, 101)  # odd sizes: the authors' context path resizes by size
    ref = load_ref(name, "models.model_stages").BiSeNet(backbone, NUM_CLASSES,
                                                        use_boundary_8=True)
    ref = randomise(ref, x)
    # the published files hold every tensor twice (features.N and its alias x2..x32), the
    # unused ImageNet classifier and all seven heads
    path = save_checkpoint(tmp_path, ref.state_dict())
    with torch.no_grad():
        expected = ref(x)[0]
    ours = build_model(name, NUM_CLASSES, weights=str(path))
    assert_same_logits(ours, expected, x)

    def size(*modules: nn.Module) -> int:
        return sum(count_params(m) for m in modules)

    backbone_net = ref.cp.backbone
    classifier = size(backbone_net.conv_last, backbone_net.fc, backbone_net.bn,
                      backbone_net.linear)
    assert count_params(ref) == params
    unused = size(ref.conv_out_sp2, ref.conv_out_sp4, ref.conv_out_sp16)
    context_heads = size(ref.conv_out16, ref.conv_out32)
    assert count_params(ours) == params - classifier - unused - context_heads \
        - size(ref.conv_out_sp8)
    # with the detail head and one context head (on the refined stage-4 context at 1/8)
    full = build_model(name, NUM_CLASSES, aux=True, detail=True, weights=str(path)).eval()
    assert count_params(full) == params - classifier - unused - size(ref.conv_out32)
    with torch.no_grad():
        aux = full(x)["aux"]
    assert (aux - ref(x)[1]).abs().max() < TOLERANCE


def test_a_seglab_state_dict_loads_by_name(tmp_path):
    model = build_model("enet", 3).eval()
    path = save_checkpoint(tmp_path, {"state_dict": model.state_dict()}, "ours.pth")
    again = build_model("enet", 3, weights=str(path)).eval()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  again.state_dict().values(), strict=True))
    with pytest.raises(ModelError, match="ours.pth do not fit this model.*size mismatch"):
        build_model("enet", 4, weights=str(path))
    with pytest.raises(ModelError, match="weight file .*missing.pth does not exist"):
        build_model("enet", 3, weights=str(tmp_path / "missing.pth"))
