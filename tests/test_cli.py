"""The segbench command: config printing, model listing, clear errors."""

import subprocess
import sys

import yaml

from segbench.cli import main


def test_config_prints_composed_config(capsys):
    assert main(["config", "experiment=camvid_quick", "train.epochs=2"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["train"]["epochs"] == 2 and set(cfg["model"]) == set(cfg["models"])


def test_config_error_exit_code_and_message(capsys):
    assert main(["config", "train.scheduler=step"]) == 2
    err = capsys.readouterr().err
    assert "train.scheduler" in err and "poly, cosine, onecycle, none" in err


def test_models_lists_library_name_and_parameters():
    out = subprocess.run([sys.executable, "-m", "segbench.cli", "models"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    libs = {line.split()[0] for line in lines}
    assert {"smp", "torchvision", "mmseg"} <= libs
    unet = next(line for line in lines if "smp_unet_r18" in line)
    assert unet.split()[0] == "smp" and "M parameters" in unet
    assert float(unet.split()[2].rstrip("M")) > 10  # Unet(resnet18): 14.3M


def test_convert_reports_missing_root(tmp_path, capsys):
    import json

    cfg = tmp_path / "ds.json"
    cfg.write_text(json.dumps({"name": "x", "format": "mask_folder", "root": str(tmp_path / "nope"),
                               "classes": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}], "ignore_index": 255}))
    assert main(["convert", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 2
    assert "dataset root folder not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
