"""The model zoo: every config in config/model builds and trains one step; `segbench models` lists them;
pretrained weights load strictly from local files; the mmseg configs that need compiled ops fail clearly."""

import subprocess
import sys

import pytest
import torch

from segbench import _compat
from segbench.models import architecture_config, count_parameters, create_model, model_configs

ZOO = model_configs()


def _input_size(cfg):
    # PAN's pyramid attention pools the deepest feature map 8x: sides of at least 128
    return (128, 128) if cfg.get("arch") == "PAN" else (64, 96)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_model_config_builds_and_trains_one_step(name):
    cfg = ZOO[name]
    torch.manual_seed(0)
    model = create_model(num_classes=3, **architecture_config(cfg))
    model.train()
    h, w = _input_size(cfg)
    x, y = torch.randn(2, 3, h, w), torch.randint(0, 3, (2, h, w))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    logits = model(x)
    assert logits.shape == (2, 3, h, w) and logits.dtype == torch.float32
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert len(changed) > 0.5 * len(before), f"{name}: only {len(changed)} of {len(before)} tensors trained"
    assert any(p.grad is not None for p in model.encoder.parameters()), f"{name}: the encoder got no gradient"


def test_the_zoo_spans_the_three_libraries_as_promised():
    libs = {}
    for cfg in ZOO.values():
        libs.setdefault(cfg["library"], []).append(cfg)
    smp_archs = {c["arch"].lower() for c in libs["smp"]}
    from segbench.models.smp_backend import architectures

    assert smp_archs == {a.lower() for a in architectures()} and len(smp_archs) >= 12
    assert any(c["encoder"].startswith("tu-") for c in libs["smp"])
    assert {c["arch"].split("_")[0] for c in libs["torchvision"]} == {"fcn", "deeplabv3", "lraspp"}
    assert len({c["config"] for c in libs["mmseg"]}) >= 15


def test_segbench_models_prints_library_name_and_parameter_count():
    out = subprocess.run(
        [sys.executable, "-m", "segbench.cli", "models", "--library", "torchvision", "--strict"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    names = sorted(n for n, c in ZOO.items() if c["library"] == "torchvision")
    assert [line.split()[1] for line in out] == names
    for line in out:
        lib, name, millions = line.split()[:3]
        assert lib == "torchvision"
        n = count_parameters(create_model(num_classes=11, **architecture_config(ZOO[name])))
        assert millions == f"{n / 1e6:.2f}M"


def test_registry_by_model_name_and_errors_list_valid_names():
    m = create_model("smp_fpn_mbv3s", num_classes=4)
    assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 64, 64)
    with pytest.raises(KeyError, match="smp, torchvision, mmseg.*smp_unet_r18"):
        create_model("smp_unet_r81", num_classes=2)


@pytest.mark.parametrize("config,op", [("psanet/psanet_r50-d8_4xb2-80k_cityscapes-512x1024.py", "psamask")])
def test_mmseg_config_that_needs_a_compiled_op_fails_with_a_clear_message(config, op):
    if not getattr(sys.modules.get("mmcv._ext"), "__segbench_stub__", True):
        pytest.skip("a compiled mmcv is installed")
    with pytest.raises(_compat.CompiledOpUnavailable, match=f"{op}.*mmcv-lite.*segbench models"):
        m = create_model("mmseg", num_classes=3, config=config)
        m(torch.randn(2, 3, 64, 64)).mean().backward()


@pytest.mark.parametrize(
    "config,message",
    [
        ("maskformer/maskformer_r101-d32_8xb2-160k_ade20k-512x512.py", "need mmdet"),
        ("mask2former/mask2former_r101_8xb2-160k_ade20k-512x512.py", "mmdet is not installed"),
        ("poolformer/fpn_poolformer_m36_8xb4-40k_ade20k-512x512.py", "mmpretrain is not installed"),
        ("point_rend/pointrend_r101_4xb2-80k_cityscapes-512x1024.py", "PointRend"),
        (
            "san/san-vit-b16_coco-stuff164k-640x640.py",
            "MultimodalEncoderDecoder; segbench supports EncoderDecoder",
        ),
    ],
)
def test_mmseg_configs_that_cannot_work_here_say_why(config, message):
    import importlib.util

    if any(importlib.util.find_spec(p) for p in ("mmdet", "mmpretrain")):
        pytest.skip("mmdet or mmpretrain is installed")
    with pytest.raises(ValueError, match=message):
        create_model("mmseg", num_classes=3, config=config)
