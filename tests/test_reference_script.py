"""The stand-alone ONNX script shipped with a model (src/segbench/reference/segment_onnx.py) gives the
masks of ``segbench predict`` on real CamVid frames, in every inference mode, without torch or OpenCV."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from segbench.reference import segment_onnx as so

SCRIPT = Path(so.__file__)  # the installed package carries it
#: the script's inference settings per case (as evaluate config keys); "auto" takes model.json's
CASES = {
    "resize_flip": {"mode": "resize", "flip": True},
    "whole_scale0.5": {"mode": "whole", "scale": 0.5},
    "slide_mean_scale0.5": {"mode": "slide", "scale": 0.5, "overlap": 0.25, "blend": "mean"},
    # every image to a diagonal of 333 px (the plan's size normalisation): 360x480 frames by 0.555
    "whole_diagonal333": {"mode": "whole", "scale": 2.0, "target_diagonal": 333},
    "auto_slide_gaussian": {"mode": "auto"},
}
#: model.json's own inference, taken by mode auto (scale 0.6: INTER_AREA with a non-integer factor)
MODEL_INFERENCE = {"mode": "slide", "scale": 0.6, "crop": [64, 96], "overlap": 0.25, "blend": "gaussian"}
#: masks must agree on this share of each frame's pixels. The network input is the same bytes on both
#: sides (test_input_pipeline_is_opencv_and_albumentations_bit_for_bit) and the logit upsampling is
#: PyTorch's to the bit, so only ONNX Runtime's float32 kernels (logits ~1e-6 from PyTorch's) can flip
#: a pixel, one whose two best classes are that close. Measured with the model below: 100 % in every
#: mode, at worst 4 pixels of a frame (99.998 %) depending on the thread count. 99.99 % (17 pixels of
#: 360x480, as segbench's own ONNX parity check) leaves 4x that margin, and still fails a resize that
#: is merely float32 bilinear instead of OpenCV's fixed point (measured 99.87 %), Pillow's NEAREST for
#: the labels (99.2 %), its BOX for INTER_AREA (99.2 %) or a mean blend for a gaussian one (92 %).
AGREEMENT_MIN = 0.9999


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """PyTorch on one thread here: on 2 busy cores its two OpenMP threads wait for each other, which
    made this file take 85 s instead of 9 s (the masks are compared, not the speed)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def frames(camvid_subset):
    """4 real test frames of 360x480, 2 from each of CamVid's test sequences."""
    files = sorted((camvid_subset / "CamVid" / "test").glob("*.png"))[::2]
    assert len({f.name[:6] for f in files}) == 2 and len(files) == 4
    return files


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, camvid_subset, frames):
    """A model folder as ``best/`` holds it: LR-ASPP trained for a few steps on the subset's training
    frames (so its logits are not near-ties as random weights' are), exported to ONNX and checked."""
    from safetensors.torch import save_file

    from segbench.config import compose
    from segbench.export import onnx_export_and_check
    from segbench.images import read_image, read_mask
    from segbench.inference import _normalize
    from segbench.io import atomic_write_json
    from segbench.models import create_model
    from segbench.models.checkpoint import load_trained_model

    cfg = compose([])
    norm = cfg["augment"]["normalize"]
    torch.manual_seed(0)
    mcfg = dict(cfg["model"]["tv_lraspp_mbv3"], name="tv_lraspp_mbv3")
    model = create_model(num_classes=11, **mcfg)
    train = sorted((camvid_subset / "CamVid" / "train").glob("*.png"))[::2]  # 6 frames, 3 sequences
    x = np.stack(
        [_normalize(cv2.resize(read_image(f), (96, 64), interpolation=cv2.INTER_LINEAR), norm) for f in train]
    )
    y = [read_mask(f.parent.parent / "trainannot" / f.name).astype(np.uint8) for f in train]
    y = np.stack([cv2.resize(m, (96, 64), interpolation=cv2.INTER_NEAREST) for m in y]).astype(np.int64)
    x, y = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y)
    # 15 full-batch steps with BatchNorm's statistics frozen (eval mode: batch statistics of 6 frames
    # leave running statistics that collapse the predictions to one class, as random weights predict
    # one class everywhere). Measured on CamVid test frames: 5 classes predicted, about 50 % pixel
    # accuracy, the two best logits within 1e-3 of each other on about 0.1 % of the pixels
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.eval()
    for _ in range(15):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y, ignore_index=11).backward()  # 11: CamVid's void
        opt.step()
    d = tmp_path_factory.mktemp("best")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
    info = {
        "model": mcfg,
        "num_classes": 11,
        "classes": cfg["dataset"]["classes"],
        "ignore_index": 255,
        "image_size": [64, 96],
        "normalize": norm,
        "inference": MODEL_INFERENCE,
    }
    atomic_write_json(d / "model.json", info)
    model, info = load_trained_model(d, "cpu")
    parity = onnx_export_and_check(model, info, [read_image(f) for f in frames[:2]], d / "model.onnx")
    assert parity["passed"], parity
    classes = {"classes": cfg["dataset"]["classes"], "ignore_index": 255, "background": None}
    atomic_write_json(d / "classes.json", classes)
    return d


def _case_dir(model_dir: Path, dest: Path, evaluate: dict) -> Path:
    """A copy of the model folder whose preprocessing.json says ``evaluate``, with the script in it."""
    from segbench.best import _preprocessing
    from segbench.io import atomic_write_json

    dest.mkdir()
    for name in ("model.onnx", "model.json", "model.safetensors", "classes.json"):
        (dest / name).symlink_to(model_dir / name)
    atomic_write_json(
        dest / "preprocessing.json",
        _preprocessing(json.loads((model_dir / "model.json").read_text()), evaluate),
    )
    shutil.copyfile(SCRIPT, dest / "segment_onnx.py")  # a copy: the script finds the model beside itself
    return dest


@pytest.mark.parametrize("case", list(CASES))
def test_script_gives_predicts_masks(tmp_path, model_dir, frames, case):
    """segbench predict (PyTorch) and the script (ONNX, run stand-alone) write the same masks."""
    from segbench.config import compose
    from segbench.predict import predict_files

    evaluate = {**compose([])["evaluate"], **CASES[case]}
    best = _case_dir(model_dir, tmp_path / "best", evaluate)
    predict_files(best, frames, tmp_path / "predict", evaluate, device="cpu", progress=False)
    # the script as an application runs it: its own interpreter, isolated (-I: no PYTHONPATH, not even
    # the script's folder), from another folder, logging every import
    r = subprocess.run(
        [sys.executable, "-I", "-X", "importtime", str(best / "segment_onnx.py"), *map(str, frames)]
        + ["-o", str(tmp_path / "script"), "--threads", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    imported = {ln.split("|")[-1].strip() for ln in r.stderr.splitlines() if ln.startswith("import time:")}
    assert "onnxruntime" in imported and "PIL.Image" in imported  # the import log is read right
    banned = {m for m in imported if m.split(".")[0] in ("torch", "cv2", "albumentations", "segbench")}
    assert not banned, banned

    agreement, classes = [], set()
    for f in frames:
        ref = Image.open(tmp_path / "predict" / f"{f.stem}_mask.png")
        got = Image.open(tmp_path / "script" / f"{f.stem}_mask.png")
        assert got.mode == ref.mode == "P" and got.getpalette() == ref.getpalette()
        a, b = np.asarray(ref), np.asarray(got)
        assert a.shape == b.shape == (360, 480)
        agreement.append(float((a == b).mean()))
        classes |= set(np.unique(a).tolist())
    print(f"{case}: pixels equal per image {[round(v, 6) for v in agreement]}")
    assert len(classes) >= 3, classes  # the masks are not trivially uniform
    assert min(agreement) >= AGREEMENT_MIN, agreement


def test_settings_and_load(model_dir, tmp_path):
    """The settings are segbench's InferenceConfig.from_dict's (mode auto takes model.json's inference,
    else resize); load resolves them with the folder's model.json; bad settings and inputs refused."""
    from segbench.inference import InferenceConfig

    for evaluate in (
        {"mode": "auto", "flip": True, "overlap": 0.1, "scale": 2.0, "crop": None},
        {"mode": "slide", "scale": 0.5, "crop": [96, 128], "overlap": 0.3, "blend": "gaussian"},
        {"mode": "whole", "crop": None, "flip": None},
        {"mode": "whole", "target_diagonal": 250},
        {},
    ):
        for own in (None, MODEL_INFERENCE):
            ref = InferenceConfig.from_dict(evaluate, [64, 96], None, own)
            got = so.inference_settings({"inference": evaluate}, own)
            assert got == {k: getattr(ref, k) for k in got}, (evaluate, own)
    best = _case_dir(model_dir, tmp_path / "best", {"mode": "auto", "crop": None})
    session, prep = so.load(best, threads=1)
    assert prep["inference"] == {**MODEL_INFERENCE, "target_diagonal": None, "flip": False}
    assert session.get_inputs()[0].name == "image"
    with pytest.raises(ValueError, match="blend 'max' unknown"):
        so.inference_settings({"inference": {"mode": "slide", "blend": "max"}})
    with pytest.raises(FileNotFoundError, match="model.onnx not found"):
        so.load(tmp_path)
    with pytest.raises(ValueError, match=r"uint8\[H, W, 3\]"):
        so.segment(session, np.zeros((8, 8), np.uint8), prep)
    assert (
        so.main([str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "out"), "--model-dir", str(best)]) == 2
    )


def test_images_are_read_as_segbench_reads_them(tmp_path):
    """EXIF orientation applied and RGB, as segbench.images.read_image."""
    from segbench.images import read_image

    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = 255
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    im.save(tmp_path / "r.jpg", exif=exif)
    Image.fromarray(arr[..., 0]).save(tmp_path / "grey.png")
    for name in ("r.jpg", "grey.png"):
        got = so.read_image(tmp_path / name)
        assert got.shape[2] == 3 and np.array_equal(got, read_image(tmp_path / name))
    assert so.read_image(tmp_path / "r.jpg").shape == (40, 20, 3)


def test_input_pipeline_is_opencv_and_albumentations_bit_for_bit(frames):
    """The numpy resizes against OpenCV on real frames: at most 1 grey level apart (the contract), and in
    fact the same bytes, as the script's docstring says; the nearest-neighbour label resize and the
    normalisation exactly as segbench's; the logit upsampling as segbench's torch one."""
    from segbench.config import compose
    from segbench.inference import _normalize, upsample_argmax

    norm = compose([])["augment"]["normalize"]
    for f in frames[::3]:
        img = so.read_image(f)
        for h, w in [(64, 96), (97, 131), (512, 768), (541, 719)]:  # down and up, odd factors
            d = np.abs(
                so.resize_linear(img, h, w).astype(int)
                - cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
            )
            assert d.max() <= 1 and (d == 0).all(), (f.name, h, w, d.max(), (d > 0).mean())
        for scale in (0.5, 0.75, 0.37, 0.25):  # fast 2x2, generic, generic, fast 4x4
            h, w = round(360 * scale), round(480 * scale)
            d = np.abs(
                so.resize_area(img, h, w).astype(int) - cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            )
            assert d.max() <= 1 and (d == 0).all(), (f.name, scale, d.max(), (d > 0).mean())
        assert np.array_equal(so.normalize(img, norm), _normalize(img, norm))
    labels = np.asarray(Image.open(frames[0].parent.parent / "testannot" / frames[0].name))[::3, ::2]
    for h, w in [(360, 480), (361, 479), (77, 100)]:
        ref = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(so.resize_nearest(labels, h, w), ref), (h, w)
    pil = np.asarray(Image.fromarray(labels).resize((100, 77), Image.NEAREST))  # pixel centres: not cv2's
    assert not np.array_equal(pil, cv2.resize(labels, (100, 77), interpolation=cv2.INTER_NEAREST))
    # coarse logits, so that many pixels are (near-)ties: the argmax then depends on every rounding (a
    # float32 sum without PyTorch's fused multiply-adds already differs) and on taking the first maximum
    logits = torch.round(torch.randn(4, 64, 96, generator=torch.Generator().manual_seed(0)) * 2) / 2
    for h, w in [(360, 480), (41, 57)]:
        assert np.array_equal(so.upsample_argmax(logits.numpy(), h, w), upsample_argmax(logits[None], h, w))
