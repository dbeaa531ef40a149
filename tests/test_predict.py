"""segbench predict on real CamVid frames: masks, overlays, EXIF, odd image modes."""

import numpy as np
import pytest
from PIL import Image

from segbench.cli import main
from segbench.images import ImageInputError, read_image


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small untrained-but-real checkpoint folder, as train writes it."""
    from safetensors.torch import save_file

    from segbench.config import compose
    from segbench.io import atomic_write_json
    from segbench.models import create_model

    cfg = compose([])
    d = tmp_path_factory.mktemp("ckpt")
    mcfg = dict(cfg["model"]["tv_lraspp_mbv3"], name="tv_lraspp_mbv3")
    model = create_model(num_classes=11, **mcfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
    atomic_write_json(
        d / "model.json",
        {
            "model": mcfg,
            "num_classes": 11,
            "classes": cfg["dataset"]["classes"],
            "ignore_index": 255,
            "image_size": [64, 96],
            "normalize": cfg["augment"]["normalize"],
        },
    )
    return d


def test_predict_folder_writes_masks_and_overlays(tmp_path, model_dir, camvid_subset):
    src = camvid_subset / "CamVid" / "test"
    assert (
        main(
            [
                "predict",
                "--model",
                str(model_dir),
                str(src),
                "-o",
                str(tmp_path / "out"),
                "--mode",
                "slide",
                "--overlap",
                "0.25",
            ]
        )
        == 0
    )
    n = len(list(src.glob("*.png")))
    masks = sorted((tmp_path / "out").glob("*_mask.png"))
    assert len(masks) == n and len(list((tmp_path / "out").glob("*_overlay.jpg"))) == n
    m = np.asarray(Image.open(masks[0]))
    assert m.shape == (360, 480) and m.dtype == np.uint8 and m.max() < 11


def test_predict_single_file_to_png_path(tmp_path, model_dir, camvid_subset):
    img = sorted((camvid_subset / "CamVid" / "test").glob("*.png"))[0]
    assert (
        main(["predict", "--model", str(model_dir), str(img), "-o", str(tmp_path / "a.png"), "--flip"]) == 0
    )
    assert np.asarray(Image.open(tmp_path / "a.png")).shape == (360, 480)
    assert (tmp_path / "a_overlay.jpg").is_file()


def test_exif_orientation_is_honoured(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = 255  # a white band on the left
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    im.save(tmp_path / "r.jpg", exif=exif)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (40, 20, 3)
    assert out[:10].mean() > 200 and out[-10:].mean() < 50  # the band is now at the top


def test_modes_converted_or_refused(tmp_path):
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "g.png").shape == (8, 8, 3) and read_image(tmp_path / "g.png")[0, 0, 2] == 7
    assert read_image(tmp_path / "rgba.png").shape == (8, 8, 3)
    Image.fromarray(np.full((8, 8), 4000, np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(ImageInputError, match="deep.png.*16-bit.*8-bit RGB"):
        read_image(tmp_path / "deep.png")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageInputError, match="bad.jpg: cannot read"):
        read_image(tmp_path / "bad.jpg")


def test_predict_errors_exit_2(tmp_path, model_dir, capsys):
    assert (
        main(["predict", "--model", str(model_dir), str(tmp_path / "missing.jpg"), "-o", str(tmp_path)]) == 2
    )
    assert "no such file" in capsys.readouterr().err
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    empty = tmp_path / "no_model"
    empty.mkdir()
    assert main(["predict", "--model", str(empty), str(img), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no_model/model.json not found" in err and "train the model first" in err
    assert not (tmp_path / "out").exists()  # nothing written
