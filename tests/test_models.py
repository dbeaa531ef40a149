"""Backends: one interface, clear errors, the two import workarounds."""

import sys

import pytest
import torch

from segbench import _compat
from segbench.models import BACKENDS, count_parameters, create_model


@pytest.mark.parametrize(
    "library,cfg",
    [
        ("smp", {"arch": "Unet", "encoder": "resnet18"}),
        ("smp", {"arch": "segformer", "encoder": "mit_b0"}),
        ("torchvision", {"arch": "lraspp_mobilenet_v3_large"}),
        ("torchvision", {"arch": "deeplabv3_mobilenet_v3_large"}),
        ("mmseg", {"config": "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py"}),
        ("mmseg", {"config": "fastscnn/fast_scnn_8xb4-160k_cityscapes-512x1024.py"}),
    ],
)
def test_logits_at_input_resolution_and_backprop(library, cfg):
    torch.manual_seed(0)
    model = create_model(library, num_classes=5, **cfg)
    x = torch.randn(2, 3, 64, 96)
    y = model(x)
    assert y.shape == (2, 5, 64, 96) and y.dtype == torch.float32
    y.mean().backward()
    enc = list(model.encoder.parameters())
    assert enc and any(p.grad is not None for p in enc)
    assert 0 < count_parameters(model.encoder) < count_parameters(model)


def test_unknown_names_list_valid_ones():
    with pytest.raises(KeyError, match="smp, torchvision, mmseg"):
        create_model("keras", num_classes=2)
    with pytest.raises(ValueError, match="Unet"):
        create_model("smp", num_classes=2, arch="Unett", encoder="resnet18")
    with pytest.raises(ValueError, match="resnet18"):
        create_model("smp", num_classes=2, arch="Unet", encoder="resnet19")
    with pytest.raises(ValueError, match="lraspp_mobilenet_v3_large"):
        create_model("torchvision", num_classes=2, arch="fcn_vgg")
    with pytest.raises(ValueError, match="segformer_mit-b0"):
        create_model("mmseg", num_classes=2, config="segformer/nope.py")
    assert set(BACKENDS) == {"smp", "torchvision", "mmseg"}


def test_missing_pretrained_weights_say_where_to_put_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        create_model(
            "smp", num_classes=2, arch="Unet", encoder="resnet18", encoder_weights=str(tmp_path / "r18.pth")
        )
    with pytest.raises(FileNotFoundError, match="local cache"):
        create_model("smp", num_classes=2, arch="Unet", encoder="resnet18", encoder_weights="imagenet")


def test_local_encoder_weights_are_loaded(tmp_path):
    from safetensors.torch import save_file

    src = create_model("smp", num_classes=3, arch="FPN", encoder="resnet18")
    save_file(
        {k: v.contiguous() for k, v in src.encoder.state_dict().items()}, str(tmp_path / "enc.safetensors")
    )
    dst = create_model(
        "smp",
        num_classes=3,
        arch="FPN",
        encoder="resnet18",
        encoder_weights=str(tmp_path / "enc.safetensors"),
    )
    for (k, a), (_, b) in zip(src.encoder.state_dict().items(), dst.encoder.state_dict().items()):
        assert torch.equal(a, b), k


def test_mmcv_stand_in_raises_clear_error_when_a_compiled_op_is_called():
    create_model("mmseg", num_classes=2, config="fastscnn/fast_scnn_8xb4-160k_cityscapes-512x1024.py")
    ext = sys.modules["mmcv._ext"]
    if not getattr(ext, "__segbench_stub__", False):
        pytest.skip("a compiled mmcv is installed: the stand-in is not used")
    from mmcv.ops import nms  # imports fine; calling a compiled op must fail clearly

    with pytest.raises(_compat.CompiledOpUnavailable, match="nms.*mmcv-lite"):
        nms(torch.rand(3, 4), torch.rand(3), 0.5)


def test_torchvision_imports_and_only_its_c_ops_are_missing():
    tv = _compat.import_torchvision()
    assert hasattr(tv.models.segmentation, "lraspp_mobilenet_v3_large")
    if _compat.torchvision_ops_stubbed():
        with pytest.raises((RuntimeError, NotImplementedError)):
            tv.ops.nms(torch.rand(3, 4), torch.rand(3), 0.5)
