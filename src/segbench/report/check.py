"""Check a rendered report as a browser shows it: every image loads and no plot is empty.

Two checks, both needed:

1. Each embedded picture (``<img src="data:image/png;base64,...">``) decodes with Pillow, and holds
   a plot: at least ``min_colour`` (0.05 %) of its pixels are coloured (HSV saturation > 0.25). Every segbench
   plot draws data in colour (bars, markers, lines, heatmaps, overlays); an empty axes frame, a blank
   figure or a grey placeholder fails.
2. Headless Chromium (Debian's ``chromium``) loads the page offline: a copy of the page with a small
   script reports, after the load event, how many images the browser could not decode
   (``naturalWidth == 0``); and a full-page screenshot must not be blank.

``segbench check-report results/<experiment>/report/index.html`` runs both; the test suite and CI
run it on a real report.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["ReportCheckError", "check_report", "find_chromium", "embedded_images"]

_IMG = re.compile(r"<img\s[^>]*src=['\"]data:image/(png|jpeg);base64,([A-Za-z0-9+/=]*)['\"][^>]*>", re.I)
_ALT = re.compile(r"alt=['\"]([^'\"]*)['\"]")
_PROBE = """<script>window.addEventListener('load',function(){var im=document.images,b=0;
for(var i=0;i<im.length;i++){if(!im[i].complete||im[i].naturalWidth===0){b++;}}
document.title='segbench-check images='+im.length+' broken='+b;});</script>"""


class ReportCheckError(AssertionError):
    """The report does not display as it should; the message lists each problem."""


def find_chromium() -> str:
    """Path of a Chromium binary (``$CHROMIUM``, chromium, chromium-browser, google-chrome).

    Raises:
        FileNotFoundError: none found; the message says how to install Debian's chromium.
    """
    for name in (
        os.environ.get("CHROMIUM"),
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ):
        if name and shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    raise FileNotFoundError(
        "no Chromium found for the report check: install Debian's chromium "
        "(sudo apt-get install -y chromium) or set CHROMIUM to the browser binary"
    )


def embedded_images(doc: str) -> list[dict[str, Any]]:
    """``[{"alt", "format", "data": bytes or None (invalid base64)}]`` of the page's data-URI images."""
    out = []
    for m in _IMG.finditer(doc):
        alt = _ALT.search(m.group(0))
        try:
            data = base64.b64decode(m.group(2), validate=True)
        except ValueError:
            data = None
        out.append({"alt": alt.group(1) if alt else "?", "format": m.group(1), "data": data})
    return out


def _colour_fraction(img: Image.Image) -> float:
    hsv = np.asarray(img.convert("RGB").convert("HSV"), dtype=np.float32)
    return float((hsv[..., 1] > 64).mean())  # saturation > 0.25


def _chromium(binary: str, args: list[str], timeout: int) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="segbench-chromium-") as profile:
        cmd = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            *args,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def check_report(
    html_path: str | Path,
    chromium: str | None = None,
    min_colour: float = 0.0005,
    screenshot: str | Path | None = None,
    timeout: int = 120,
) -> dict[str, Any]:
    """Check ``html_path`` (see the module docstring).

    Args:
        html_path: the report.
        chromium: browser binary (default: :func:`find_chromium`).
        min_colour: minimum share of coloured pixels per picture.
        screenshot: where to keep the full-page screenshot (default: a temporary file, deleted).
        timeout: seconds allowed to Chromium per call.

    Returns:
        ``{"images": n, "broken_in_browser": 0, "colour_fraction": [...], "screenshot_size": [w, h]}``.

    Raises:
        ReportCheckError: a picture is broken or empty, the browser could not show an image, or the
            screenshot is blank; every problem is listed.
        FileNotFoundError: no Chromium (see :func:`find_chromium`).
    """
    html_path = Path(html_path).resolve()
    doc = html_path.read_text(encoding="utf-8")
    problems: list[str] = []
    imgs = embedded_images(doc)
    if not imgs:
        problems.append("the page has no embedded picture")
    fractions = []
    for i, im in enumerate(imgs):
        if im["data"] is None:
            problems.append(f"picture {i} ('{im['alt']}'): invalid base64")
            fractions.append(0.0)
            continue
        try:
            with Image.open(io.BytesIO(im["data"])) as pic:
                pic.load()
                frac = _colour_fraction(pic)
        except Exception as err:
            problems.append(f"picture {i} ('{im['alt']}'): not a decodable image ({err})")
            fractions.append(0.0)
            continue
        fractions.append(frac)
        if frac < min_colour:
            problems.append(
                f"picture {i} ('{im['alt']}'): looks empty ({100 * frac:.2f}% coloured pixels, "
                f"need {100 * min_colour:.2f}%)"
            )
    binary = chromium or find_chromium()
    with tempfile.TemporaryDirectory(prefix="segbench-report-check-") as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(doc.replace("</body>", _PROBE + "</body>", 1), encoding="utf-8")
        r = _chromium(binary, ["--dump-dom", probe.as_uri()], timeout)
        m = re.search(r"segbench-check images=(\d+) broken=(\d+)", r.stdout)
        if not m:
            problems.append(
                f"Chromium did not finish loading the page (exit {r.returncode}): {r.stderr[-500:]}"
            )
            n_seen = broken = -1
        else:
            n_seen, broken = int(m.group(1)), int(m.group(2))
            if broken:
                problems.append(f"Chromium could not display {broken} of {n_seen} images")
            if n_seen != len(imgs):
                problems.append(f"Chromium saw {n_seen} images, the page embeds {len(imgs)}")
        shot = Path(screenshot) if screenshot else Path(tmp) / "page.png"
        height = max(2000, 700 * max(1, len(imgs)))
        r = _chromium(
            binary,
            [
                "--hide-scrollbars",
                f"--window-size=1280,{min(height, 16000)}",
                f"--screenshot={shot}",
                html_path.as_uri(),
            ],
            timeout,
        )
        size = None
        if not shot.is_file():
            problems.append(f"Chromium wrote no screenshot (exit {r.returncode}): {r.stderr[-500:]}")
        else:
            with Image.open(shot) as s:
                size = list(s.size)
                grey = np.asarray(s.convert("L"), dtype=np.float32)
            if (grey < 200).sum() < 500:  # not even a heading drawn
                problems.append("the screenshot of the page is blank")
    if problems:
        raise ReportCheckError(
            f"{html_path}: report check failed ({len(problems)}):\n  " + "\n  ".join(problems)
        )
    return {
        "images": len(imgs),
        "broken_in_browser": broken,
        "colour_fraction": fractions,
        "screenshot_size": size,
    }
