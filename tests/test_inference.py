"""Inference modes: exact equivalences and bounded-memory behaviour on any image size."""

import numpy as np
import pytest
import torch

from segbench.inference import InferenceConfig, segment, upsample_argmax, window_starts


class PixelModel(torch.nn.Module):
    """A fully local model (1x1 convolutions): its logits at a pixel depend on that pixel only,
    so every inference mode must give the same labels at native scale."""

    def __init__(self, classes=4):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 1), torch.nn.Tanh(), torch.nn.Conv2d(8, classes, 1)
        )

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(150, 230, 3), dtype=np.uint8)


def test_window_starts_cover_exactly():
    assert window_starts(100, 40, 20) == [0, 20, 40, 60]
    assert window_starts(101, 40, 20) == [0, 20, 40, 60, 61]
    assert window_starts(30, 40, 20) == [0]


def test_upsample_argmax_equals_interpolate():
    torch.manual_seed(1)
    logits = torch.randn(1, 5, 23, 31)
    ref = torch.nn.functional.interpolate(
        logits, size=(97, 130), mode="bilinear", align_corners=False
    ).argmax(1)[0]
    ours = upsample_argmax(logits, 97, 130, strip_rows=16)
    assert (ours == ref.numpy()).mean() > 0.999  # float rounding may flip exact ties only
    assert ours.dtype == np.uint8


@pytest.mark.parametrize("channels_last", [False, True])
def test_upsample_argmax_takes_the_first_maximal_class_like_argmax(channels_last):
    # logits with many exact ties (integers) and NaNs, at the output size (no resampling) and resized
    torch.manual_seed(2)
    logits = torch.randint(0, 3, (1, 11, 40, 56)).float()
    logits[0, 4, :3] = float("nan")
    if channels_last:  # what a channels-last model returns
        logits = logits.contiguous(memory_format=torch.channels_last)
    assert np.array_equal(upsample_argmax(logits, 40, 56), logits[0].argmax(0).numpy())
    logits = torch.randn(1, 11, 40, 56)  # resized: ties only by rounding
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    big = torch.nn.functional.interpolate(logits, size=(90, 130), mode="bilinear", align_corners=False)
    ours = upsample_argmax(logits, 90, 130, strip_rows=32)
    assert (ours == big[0].argmax(0).numpy()).mean() > 0.999


@pytest.mark.parametrize("blend", ["mean", "gaussian"])
@pytest.mark.parametrize("flip", [False, True])
def test_slide_equals_whole_for_a_local_model(image, blend, flip):
    model = PixelModel().eval()
    whole = segment(model, image, InferenceConfig(image_size=[64, 96], mode="whole", flip=flip))
    slide = segment(
        model, image, InferenceConfig(image_size=[64, 96], mode="slide", overlap=0.5, blend=blend, flip=flip)
    )
    direct = model(
        torch.from_numpy(
            (
                (image.astype(np.float32) - np.array([0.485, 0.456, 0.406], np.float32) * 255)
                / (np.array([0.229, 0.224, 0.225], np.float32) * 255)
            ).transpose(2, 0, 1)
        )[None]
    ).argmax(1)[0]
    assert whole.shape == image.shape[:2] and slide.shape == image.shape[:2]
    assert (whole == direct.numpy()).mean() > 0.9999
    assert (slide == whole).mean() > 0.9999


def test_sizes_not_divisible_by_stride_are_padded_not_rejected(image):
    class StrideModel(PixelModel):
        def forward(self, x):
            assert x.shape[-1] % 32 == 0 and x.shape[-2] % 32 == 0, x.shape
            return super().forward(x)

    out = segment(StrideModel().eval(), image, InferenceConfig(image_size=[64, 96], mode="whole"))
    assert out.shape == (150, 230)
    out = segment(
        StrideModel().eval(), image, InferenceConfig(image_size=[50, 70], mode="slide", overlap=0.25)
    )
    assert out.shape == (150, 230)


def test_resize_mode_and_scale(image):
    model = PixelModel().eval()
    r = segment(model, image, InferenceConfig(image_size=[64, 96], mode="resize"))
    s = segment(model, image, InferenceConfig(image_size=[64, 96], mode="slide", scale=0.5))
    assert r.shape == s.shape == image.shape[:2]
    assert len(np.unique(r)) > 1


def test_bad_settings_are_refused(image):
    with pytest.raises(ValueError, match="resize, whole, slide"):
        InferenceConfig(image_size=[64, 64], mode="tiles")
    with pytest.raises(ValueError, match="overlap"):
        InferenceConfig(image_size=[64, 64], overlap=1.5)
    with pytest.raises(ValueError, match="uint8"):
        segment(PixelModel().eval(), image.astype(np.float32), InferenceConfig(image_size=[64, 64]))


def test_target_diagonal_rescales_each_image_to_one_diagonal():
    """With ``target_diagonal`` every image reaches the network at that diagonal whatever its own size
    (the plan's size normalisation), and comes back at its own size; ``scale`` is then not used."""
    seen = []

    class Recording(PixelModel):
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return super().forward(x)

    model = Recording().eval()
    cfg = InferenceConfig(image_size=[64, 64], mode="whole", scale=3.0, target_diagonal=100)
    rng = np.random.default_rng(0)
    for h, w in [(60, 80), (600, 800), (300, 400)]:  # diagonals 100, 1000, 500: factors 1, 0.1, 0.2
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        assert segment(model, img, cfg).shape == (h, w)
    assert seen == [(64, 96)] * 3  # 60x80 each time, padded to multiples of 32
    from segbench.data.preprocess import image_scale

    assert image_scale(600, 800, 3.0, 100) == pytest.approx(0.1) and image_scale(600, 800, 3.0) == 3.0
    with pytest.raises(ValueError, match="target_diagonal"):
        InferenceConfig(image_size=[64, 64], target_diagonal=0)
    with pytest.raises(ValueError, match="target_diagonal"):
        image_scale(10, 10, 1.0, -5)
