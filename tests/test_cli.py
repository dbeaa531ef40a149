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
    """The zoo as `segbench models` shows it: >= 12 SMP architectures, the 3 torchvision families and
    >= 15 MMSegmentation configs, each one built here (--strict: a config that does not build fails)."""
    out = subprocess.run(
        [sys.executable, "-m", "segbench.cli", "models", "--strict"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    by_lib = {}
    for line in lines:
        lib, name, params = line.split()[:3]
        assert params.endswith("M") and float(params[:-1]) > 0
        by_lib.setdefault(lib, []).append(line)
    assert set(by_lib) == {"smp", "torchvision", "mmseg"}
    assert len({line.split()[3] for line in by_lib["smp"]}) >= 12  # architecture names
    assert {line.split()[3].split("_")[0] for line in by_lib["torchvision"]} == {"fcn", "deeplabv3", "lraspp"}
    assert len(by_lib["mmseg"]) >= 15
    unet = next(line for line in lines if line.split()[1] == "smp_unet_r18")
    assert (
        unet.split()[0] == "smp" and 14.0 < float(unet.split()[2].rstrip("M")) < 14.5
    )  # Unet(resnet18): 14.33M


def test_convert_reports_missing_root(tmp_path, capsys):
    import json

    cfg = tmp_path / "ds.json"
    cfg.write_text(
        json.dumps(
            {
                "name": "x",
                "format": "mask_folder",
                "root": str(tmp_path / "nope"),
                "classes": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}],
                "ignore_index": 255,
            }
        )
    )
    assert main(["convert", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 2
    assert "dataset root folder not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
