"""Losses honour ignore_index; atomic writes leave nothing behind on failure."""

import pytest
import torch

from segbench.io import atomic_path, atomic_write_json, write_if_changed
from segbench.losses import build_loss


@pytest.mark.parametrize(
    "spec", [{"ce": 1.0}, {"ce": 1.0, "dice": 1.0}, {"focal": 1.0}, {"lovasz": 1.0}, {"tversky": 1.0}]
)
def test_loss_ignores_ignore_index_pixels(spec):
    torch.manual_seed(0)
    loss = build_loss(spec, ignore_index=255)
    logits = torch.randn(2, 4, 8, 8)
    target = torch.randint(0, 4, (2, 8, 8))
    target[:, :3] = 255
    changed = logits.clone()
    changed[:, :, :3] = torch.randn(2, 4, 3, 8) * 10  # only ignored pixels change
    assert torch.isfinite(loss(logits, target))
    assert loss(logits, target).item() == pytest.approx(loss(changed, target).item(), rel=1e-5)


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError, match="ce, dice, jaccard, focal, tversky, lovasz"):
        build_loss({"hinge": 1.0})
    with pytest.raises(ValueError, match="positive weight"):
        build_loss({"ce": 0.0})


def test_atomic_write_failure_leaves_old_content(tmp_path):
    p = tmp_path / "m.json"
    atomic_write_json(p, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert p.read_text().strip().startswith("{") and '"a": 1' in p.read_text()
    assert [x.name for x in tmp_path.iterdir()] == ["m.json"]
    atomic_write_json(p, {"v": float("nan")})
    assert '"v": null' in p.read_text()


def test_write_if_changed_keeps_mtime(tmp_path):
    p = tmp_path / "c.json"
    assert write_if_changed(p, "x\n")
    mtime = p.stat().st_mtime_ns
    assert not write_if_changed(p, "x\n")
    assert p.stat().st_mtime_ns == mtime
    assert write_if_changed(p, "y\n") and p.read_text() == "y\n"


def test_atomic_outputs_follow_the_umask(tmp_path):
    import os

    from segbench.io import atomic_dir

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {})
        with atomic_path(tmp_path / "b.bin") as t:  # a writer that replaces the temp file itself
            t.unlink()
            fd = os.open(t, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
        assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o644
        with atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("1")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(old)
