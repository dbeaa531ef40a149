"""Backends: one interface, clear errors, the two import workarounds."""

import os
import sys

import pytest
import torch
from PIL import Image

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


def _config_that_runs_code(folder, marker):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\nmodel = dict(type='X')\n")
    return folder / "evil.py"


def test_an_mmseg_config_outside_the_package_is_never_run_unless_its_folder_is_trusted(tmp_path, monkeypatch):
    """An mmseg config is Python that mmengine executes when it reads it; a model folder names one.
    A config outside mmseg's shipped tree (an absolute path, a ``..`` escape) is refused before it runs;
    a folder the user lists in SEGBENCH_TRUSTED_MMSEG_CONFIGS is read (and then judged like any config)."""
    from segbench.models.mmseg_backend import TRUST_ENV, config_root

    marker = tmp_path / "code_ran"
    evil = _config_that_runs_code(tmp_path / "cfgs", marker)
    monkeypatch.delenv(TRUST_ENV, raising=False)
    with pytest.raises(PermissionError, match=f"outside mmseg's shipped configs.*export {TRUST_ENV}="):
        create_model("mmseg", num_classes=2, config=str(evil))
    escape = os.path.relpath(evil, config_root())  # ../../.. from the config tree to the file
    with pytest.raises(PermissionError, match="outside mmseg's shipped configs"):
        create_model("mmseg", num_classes=2, config=escape)
    assert not marker.exists()
    monkeypatch.setenv(TRUST_ENV, str(tmp_path / "cfgs"))
    with pytest.raises(ValueError, match="EncoderDecoder"):
        create_model("mmseg", num_classes=2, config=str(evil))
    assert marker.exists()  # trusted: it was read (and ran), then refused as not a segmentation model


def test_predict_with_a_model_folder_that_names_a_config_to_run_exits_2_and_runs_nothing(
    tmp_path, monkeypatch, capsys
):
    from safetensors.torch import save_file

    from segbench.cli import main
    from segbench.io import atomic_write_json
    from segbench.models.mmseg_backend import TRUST_ENV

    monkeypatch.delenv(TRUST_ENV, raising=False)
    marker = tmp_path / "code_ran"
    model_dir = tmp_path / "best"
    evil = _config_that_runs_code(model_dir, marker)
    info = {"model": {"library": "mmseg", "config": str(evil)}, "num_classes": 2, "classes": [],
            "ignore_index": 255, "image_size": [32, 32], "normalize": None}  # fmt: skip
    atomic_write_json(model_dir / "model.json", info)
    save_file({"w": torch.zeros(1)}, str(model_dir / "model.safetensors"))
    Image.new("RGB", (32, 32)).save(tmp_path / "img.png")
    assert (
        main(["predict", "--model", str(model_dir), str(tmp_path / "img.png"), "-o", str(tmp_path / "out")])
        == 2
    )
    assert "outside mmseg's shipped configs" in capsys.readouterr().err
    assert not marker.exists()
