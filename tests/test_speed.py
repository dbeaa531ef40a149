"""Training at the speed of the hardware: the precision and memory format ``auto`` picks, the cores
plan, the resume checkpoint's cadence and atomic write, and the float32 loss under autocast."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from segbench import device
from segbench.config import compose, job_configs
from segbench.training.callbacks import AtomicCheckpointIO
from segbench.training.memory_format import channels_last_for
from segbench.training.recipe import Placement, TrainRecipe
from segbench.training.threads import cpu_plan

REPO = Path(__file__).resolve().parents[1]


def _recipe(**keys):
    return TrainRecipe.from_dict({**job_configs(compose([]))["train"], **keys})


# ---------------------------------------------------------------- precision: from the machine only


def test_auto_precision_is_bf16_on_cpus_that_compute_it_and_fp32_elsewhere(monkeypatch):
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)
    assert Placement.of(_recipe(device="cpu")).precision == "bf16-mixed"
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    assert Placement.of(_recipe(device="cpu")).precision == "32-true"
    assert Placement.of(_recipe(device="cpu", precision="bf16-mixed")).precision == "bf16-mixed"  # as asked
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert device.auto_precision("gpu") == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert device.auto_precision("gpu") == "16-mixed"
    assert device.auto_precision("mps") == "32-true"


def test_the_cpu_bf16_check_reads_what_torch_detects(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert device.cpu_has_bf16() is True
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert device.cpu_has_bf16() is False


# ---------------------------------------------------------------- memory format


def test_channels_last_auto_only_for_the_models_measured_faster_in_it(monkeypatch):
    from segbench.training import memory_format

    on, why = channels_last_for("auto", {"name": "smp_unet_r18"})
    assert on is True and "faster in channels-last" in why
    on, why = channels_last_for("auto", {"name": "my_net"})
    assert on is False and "my_net keeps NCHW (not measured" in why
    monkeypatch.setitem(memory_format.CHANNELS_LAST_FASTER, "my_net", "measured")
    assert channels_last_for("auto", {"name": "my_net"})[0] is True
    on, why = channels_last_for("auto", {"name": "tv_lraspp_mbv3"})  # faster, but broke bf16 training
    assert on is False and "non-finite weight gradients" in why
    assert channels_last_for(True, {"name": "other"})[0] is True  # forced
    # a user's copy of a zoo model under another name is the same network: the same memory format
    mine = {"name": "unet_resize", "library": "smp", "arch": "Unet", "encoder": "resnet18"}
    on, why = channels_last_for("auto", mine)
    assert on is True and "the architecture of smp_unet_r18" in why
    assert channels_last_for("auto", dict(mine, encoder="resnet34"))[0] is False  # another network
    lraspp = {"name": "my_lraspp", "library": "torchvision", "arch": "lraspp_mobilenet_v3_large"}
    assert channels_last_for("auto", lraspp)[0] is False
    assert channels_last_for(False, {"name": "smp_unet_r18"})[0] is False
    # the architecture keys are the zoo configs' own (they cannot drift apart)
    import yaml

    listed = set(memory_format.CHANNELS_LAST_FASTER) | set(memory_format.CHANNELS_LAST_BROKEN)
    assert listed - {"my_net"} <= set(memory_format.ARCHITECTURES)
    for zoo, keys in memory_format.ARCHITECTURES.items():
        own = yaml.safe_load((REPO / "config" / "model" / f"{zoo}.yaml").read_text())
        assert {k: own.get(k) for k in keys} == keys, zoo
    with pytest.raises(ValueError, match="allowed: auto, true, false"):
        channels_last_for("yes", {})


# ---------------------------------------------------------------- cores


def test_the_cores_plan_never_runs_more_threads_than_the_job_is_given(monkeypatch):
    two = cpu_plan(2, "auto", "cpu")
    assert (two.torch_threads, two.num_workers) == (2, 0)  # a worker would take a core from the convolutions
    sixteen = cpu_plan(16, "auto", "cpu")
    assert (sixteen.torch_threads, sixteen.num_workers) == (12, 4)
    assert sixteen.torch_threads + sixteen.num_workers == 16
    gpu = cpu_plan(8, "auto", "gpu")
    assert (gpu.num_workers, gpu.torch_threads) == (7, 1)
    assert cpu_plan(4, 3, "cpu").num_workers == 3  # a number is kept as it is
    ddp = cpu_plan(8, "auto", "cpu", processes=2)  # two CPU processes of one job share its cores
    assert ddp.cores == 4 and ddp.torch_threads + ddp.num_workers == 4
    with pytest.raises(ValueError, match="give a number of workers or auto"):
        cpu_plan(4, "many", "cpu")
    # no --threads: the cores this process may use, SLURM's allocation included
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(32)))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    plan = cpu_plan(None, "auto", "cpu")
    assert (plan.cores, plan.source) == (6, "affinity") and plan.torch_threads + plan.num_workers == 6
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert cpu_plan(None, 0, "cpu").cores == 32


def test_the_recipe_accepts_auto_workers_and_refuses_a_bad_memory_format():
    assert _recipe(num_workers="auto").num_workers == "auto"
    assert _recipe(checkpoint_every_min=2).checkpoint_every_min == 2.0
    from segbench.config import ConfigError

    with pytest.raises(ConfigError, match="channels_last"):
        compose(["train.channels_last=sometimes"])


# ---------------------------------------------------------------- the loss under autocast


def test_the_loss_is_float32_when_the_network_runs_in_bf16():
    from segbench.losses import build_loss
    from segbench.models.base import SegmentationModel
    from segbench.training.module import SegmentationModule

    conv = torch.nn.Conv2d(3, 4, 1)
    net = SegmentationModel(conv, conv, "test")
    loss_fn = build_loss({"ce": 1.0, "dice": 1.0}, ignore_index=255)
    module = SegmentationModule(net, loss_fn, _recipe(), 4, 255, 1, channels_last=True)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 4, (2, 8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = module(module._input(x))
        loss = module._loss(logits, y)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(float(loss_fn(logits.float(), y)), abs=0)


# ---------------------------------------------------------------- checkpoints: cadence and atomic write


def test_an_interrupted_checkpoint_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "lightning" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()

    def dies_half_way(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed during the write")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_bf16_channels_last_training_writes_the_checkpoint_at_its_cadence(tmp_path, processed):
    """3 epochs: a checkpoint after epoch 1 only (10 minutes have not passed), in channels-last
    strides; every epoch but the last with checkpoint_every_min=0; plain NCHW safetensors outputs."""
    from safetensors.torch import load_file

    from segbench.data.splits import make_splits
    from segbench.training import train_model

    jobs = job_configs(compose(["train.image_size=[64,64]", "train.epochs=3", "train.batch_size=4"]))
    make_splits(processed, jobs["split"], tmp_path / "splits.json")
    model_cfg = jobs["models"]["smp_unet_r18"]
    for every, writes in ((10, 1), (0, 2)):
        out = tmp_path / f"every{every}"
        cfg = dict(jobs["train"], precision="bf16-mixed", channels_last=True, checkpoint_every_min=every)
        info = train_model(
            processed, tmp_path / "splits.json", 0, model_cfg, cfg, jobs["augment"], out, threads=2
        )
        assert info["checkpoints_written"] == writes and info["epochs"] == 3
        assert info["precision"] == "bf16-mixed" and info["channels_last"] is True
        assert json.loads((out / "train_meta.json").read_text())["cpus"]["cores"] == 2
        ckpt = torch.load(out / "lightning" / "last.ckpt", weights_only=True)
        assert ckpt["epoch"] == writes - 1  # epoch 1's (0-based 0), or epoch 2's
        conv = next(v for k, v in ckpt["state_dict"].items() if v.ndim == 4)
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
        weights = load_file(out / "model.safetensors")
        assert all(t.is_contiguous() for t in weights.values())
        assert not list((out / "lightning").glob(".*.tmp"))
        if every == 10:  # the model trained in channels-last is evaluated in it too, with the same labels
            from segbench.evaluate import load_trained_model
            from segbench.inference import InferenceConfig, segment

            assert json.loads((out / "model.json").read_text())["memory_format"] == "channels_last"
            model, info = load_trained_model(out)
            conv = next(p for p in model.parameters() if p.ndim == 4)
            assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
            image = torch.randint(0, 256, (70, 90, 3), generator=torch.Generator().manual_seed(0))
            image = image.to(torch.uint8).numpy()
            cfg = InferenceConfig(image_size=info["image_size"], normalize=info["normalize"])
            labels = segment(model, image, cfg)
            nchw = segment(model.to(memory_format=torch.contiguous_format), image, cfg)
            assert (labels == nchw).mean() > 0.999  # float rounding may flip exact ties only


def test_the_best_weights_are_stored_once_when_they_are_the_current_ones_and_rebuilt_on_resume(tmp_path):
    from types import SimpleNamespace

    from segbench.training.callbacks import History

    net = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    module = SimpleNamespace(
        model=net, epoch_train_loss=lambda: 1.0, val_loss_mean=1.0, val_confusion_matrix=torch.eye(2)
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    trainer = SimpleNamespace(current_epoch=0, optimizers=[opt], is_global_zero=True)
    history = History(tmp_path, has_val=True)
    history.on_train_epoch_start(trainer, module)
    history.on_train_epoch_end(trainer, module)  # epoch 1: mIoU 1.0, the best so far
    state = history.state_dict()
    assert state["best_is_current"] and state["best_state"] is None and state["best_epoch"] == 1
    epoch1 = {k: v.clone() for k, v in net.state_dict().items()}

    resumed = History(tmp_path, has_val=True)
    resumed.load_state_dict(state)
    resumed.on_train_start(trainer, module)  # Lightning has restored the weights by now
    assert resumed.best_state.keys() == epoch1.keys()
    assert all(torch.equal(resumed.best_state[k], epoch1[k]) for k in epoch1)
    assert all(t.is_contiguous() for t in resumed.best_state.values())

    with torch.no_grad():  # epoch 2 changes the weights and scores lower: epoch 1's weights are kept
        net.weight.add_(1.0)
    module.val_confusion_matrix = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    trainer.current_epoch = 1
    resumed.on_train_epoch_end(trainer, module)
    state = resumed.state_dict()
    assert not state["best_is_current"] and state["best_epoch"] == 1
    assert torch.equal(state["best_state"]["weight"], epoch1["weight"])
    assert not torch.equal(state["best_state"]["weight"], net.weight)


def test_the_resized_image_cache_changes_no_value_and_keeps_to_its_budget(processed):
    from segbench.data.dataset import ResizedCache, SegmentationDataset, build_transform

    meta = json.loads(processed.read_text())
    ids = sorted(meta["manifest"])[:6]
    augment = job_configs(compose([]))["augment"]  # flips, brightness, affine: random draws per item
    sets = {}
    for cached in (False, True):
        cache = ResizedCache([64, 96]) if cached else None
        transform = build_transform(augment, [64, 96], train=True, seed=7)
        sets[cached] = SegmentationDataset(processed.parent, meta["manifest"], ids, transform, cache)
    for epoch in range(2):  # the first epoch fills the cache, the second reads it
        for i in range(len(ids)):
            (x0, y0), (x1, y1) = sets[False][i], sets[True][i]
            assert torch.equal(x0, x1) and torch.equal(y0, y1), (epoch, ids[i])
    cache = sets[True].cache
    entry = meta["manifest"][ids[0]]
    img, mask = cache.get(processed.parent, entry)
    assert len(cache) == len(ids) and cache.bytes == len(ids) * (img.nbytes + mask.nbytes)
    assert img.shape == (64, 96, 3) and mask.shape == (64, 96)
    kept = img.copy()
    img[:] = 0  # what a later step does to an item in place never reaches the cache
    assert np.array_equal(cache.get(processed.parent, entry)[0], kept) and kept.any()

    small = ResizedCache([64, 96], max_mb=3 * (img.nbytes + mask.nbytes) / 1e6)  # room for 3 items
    entries = [meta["manifest"][i] for i in ids]
    for e in entries:
        small.get(processed.parent, e)
    assert len(small) == 3 and small.bytes <= small.max_bytes
    img, mask = small.get(processed.parent, entries[-1])  # beyond the budget: read again, same size
    assert img.shape == (64, 96, 3) and mask.shape == (64, 96) and len(small) == 3
