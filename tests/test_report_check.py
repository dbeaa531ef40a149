"""The report seen through headless Chromium: broken pictures and empty plots are caught."""

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from segbench.report.check import ReportCheckError, check_report, find_chromium  # noqa: E402


def _fig_uri(empty: bool, sparse: bool = False) -> str:
    fig, ax = plt.subplots(figsize=(4, 3))
    if sparse:  # a learning curve after one epoch: three markers
        for i, c in enumerate(("tab:blue", "tab:orange", "tab:green")):
            ax.plot([1], [0.2 * i], "o", color=c)
    elif not empty:
        ax.bar(["a", "b", "c"], [0.3, 0.7, 0.5], color=["tab:blue", "tab:orange", "tab:green"])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _page(tmp_path, *srcs):
    imgs = "".join(f"<img src='{s}' alt='plot {i}'>" for i, s in enumerate(srcs))
    p = tmp_path / "index.html"
    p.write_text(
        "<!DOCTYPE html><html><head><meta "
        f"charset='utf-8'><title>t</title></head><body><h1>Report</h1>{imgs}</body></html>"
    )
    return p


def test_chromium_is_installed():
    """CI installs Debian's chromium (.ci/run); without it the report cannot be checked as a picture."""
    assert find_chromium()


def test_good_report_passes(tmp_path):
    shot = tmp_path / "shot.png"
    r = check_report(_page(tmp_path, _fig_uri(False), _fig_uri(False)), screenshot=shot)
    assert r["images"] == 2 and r["broken_in_browser"] == 0 and min(r["colour_fraction"]) > 0.01
    assert shot.is_file() and r["screenshot_size"][0] == 1280


def test_broken_picture_is_caught_by_the_browser(tmp_path):
    broken = "data:image/png;base64," + base64.b64encode(b"this is not a png").decode()
    with pytest.raises(ReportCheckError) as exc:
        check_report(_page(tmp_path, _fig_uri(False), broken))
    msg = str(exc.value)
    assert "picture 1 ('plot 1'): not a decodable image" in msg
    assert "Chromium could not display 1 of 2 images" in msg


def test_sparse_plot_is_not_taken_for_an_empty_one(tmp_path):
    assert check_report(_page(tmp_path, _fig_uri(False, sparse=True)))["images"] == 1


def test_empty_plot_is_caught(tmp_path):
    with pytest.raises(ReportCheckError, match=r"picture 1 \('plot 1'\): looks empty"):
        check_report(_page(tmp_path, _fig_uri(False), _fig_uri(True)))
