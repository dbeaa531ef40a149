"""The report rendered from a small fake experiment (no training): what it says and shows, and that it
reads only declared inputs. The slow end-to-end run (tests/test_workflow_e2e.py) renders a real one."""

import base64
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_aggregate import MODELS, _fake_experiment

from segbench.aggregate import aggregate
from segbench.io import atomic_write_json
from segbench.records import StageOutputMissing
from segbench.report.render import render_report

N_TEST = 30
REPORT_CFG = {"title": None, "n_overlays": 2, "overlay_alpha": 0.5, "n_worst": 2}


def _with_images_and_predictions(tmp_path):
    """The aggregate tests' fake experiment, plus what the report also reads: test images and masks,
    each model's predicted masks, per_image.csv and the worst images in metrics.json."""
    exp, ds = _fake_experiment(
        tmp_path,
        val={"a": 0.6, "b": 0.5, "c": 0.4},
        test={"a": 0.8, "b": 0.5, "c": 0.45},
        params={"a": 1_000_000, "b": 2_000_000, "c": 300_000},
        n_test=N_TEST,
    )
    meta = json.loads((ds / "dataset.json").read_text())
    rng = np.random.default_rng(0)
    (ds / "images").mkdir()
    (ds / "masks").mkdir()
    for i in range(N_TEST):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(ds / "images" / f"t{i}.png")
        Image.fromarray((rng.random((24, 32)) > 0.5).astype(np.uint8)).save(ds / "masks" / f"t{i}.png")
        meta["manifest"][f"t{i}"] = {"image": f"images/t{i}.png", "mask": f"masks/t{i}.png", "group": f"t{i}"}
    atomic_write_json(ds / "dataset.json", meta)
    for k, name in enumerate(("a", "b", "c")):
        ev = exp / "eval" / name / "fold0" / "seed0"
        (ev / "predictions").mkdir(parents=True)
        scores = np.clip(0.5 + 0.1 * k + rng.normal(0, 0.1, N_TEST), 0, 1)
        for i in range(N_TEST):
            Image.fromarray((rng.random((24, 32)) > 0.5).astype(np.uint8)).save(
                ev / "predictions" / f"t{i}.png"
            )
        pd.DataFrame(
            {"id": [f"t{i}" for i in range(N_TEST)], "mIoU": scores, "mDice": scores, "aAcc": scores,
             "mBoundaryIoU": scores, "pixels": 768}
        ).to_csv(ev / "per_image.csv", index=False)  # fmt: skip
        metrics = json.loads((ev / "metrics.json").read_text())
        order = np.argsort(scores)[:2]
        metrics["worst_images"] = [{"id": f"t{i}", "mIoU": float(scores[i])} for i in order]
        metrics.setdefault("mBoundaryIoU", 0.3)
        (ev / "metrics.json").write_text(json.dumps(metrics))
    return exp, ds


@pytest.fixture
def experiment(tmp_path):
    exp, ds = _with_images_and_predictions(tmp_path)
    aggregate(exp, MODELS, 1, ds, {"n_bootstrap": 300})
    return exp, ds


def _pictures(html: str) -> list[Image.Image]:
    found = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    return [Image.open(io.BytesIO(base64.b64decode(b))) for b in found]


def test_the_answer_comes_first_and_names_the_selected_model(experiment, tmp_path):
    exp, ds = experiment
    html = render_report(exp, ds, REPORT_CFG, tmp_path / "index.html", {"n_bootstrap": 300})
    assert (tmp_path / "index.html").read_text() == html
    selected = json.loads((exp / "selection.json").read_text())["model"]
    assert selected == "a"  # the highest validation score
    verdict = html.index("<div class='verdict")
    assert verdict < html.index("<h2>")
    assert f"<b>Use {selected}</b>" in html[verdict : verdict + 400]
    assert "Against the runner-up:" in html and "95% CI" in html
    for section in (
        "Paired comparisons on the test images",
        "Accuracy against latency",
        "Worst test images per model",
    ):
        assert section in html
    # the configured number of resamples is the one stated (not a fixed 2,000)
    assert "300 seeded resamples" in html and "2,000" not in html
    assert not re.search(r"https?://", html)  # displays offline


def test_every_figure_is_an_embedded_picture_with_content(experiment, tmp_path):
    exp, ds = experiment
    pictures = _pictures(render_report(exp, ds, REPORT_CFG, tmp_path / "index.html", {"n_bootstrap": 300}))
    assert len(pictures) >= 6
    for im in pictures:
        arr = np.asarray(im.convert("L"))
        assert arr.shape[0] > 20 and arr.shape[1] > 20 and arr.std() > 1  # not a blank image


def test_text_from_the_data_is_escaped(experiment, tmp_path):
    exp, ds = experiment
    html = render_report(exp, ds, dict(REPORT_CFG, title="<script>alert(1)</script>"), tmp_path / "r.html")
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_a_missing_input_names_the_file_and_the_step(experiment, tmp_path):
    exp, ds = experiment
    (exp / "eval" / "b" / "fold0" / "seed0" / "confusion.npy").unlink()
    with pytest.raises(
        StageOutputMissing, match=r"eval/b/fold0/seed0/confusion.npy not found; run .*evaluate"
    ):
        render_report(exp, ds, REPORT_CFG, tmp_path / "index.html")
    assert not (tmp_path / "index.html").exists()  # nothing half-written


def test_the_report_rule_declares_every_file_the_report_reads(experiment, tmp_path, monkeypatch):
    """Every file opened while rendering is one the workflow's report rule lists as an input (or
    inside a declared folder): a report never depends on a file Snakemake does not track."""
    exp, ds = experiment
    declared = [exp / f for f in ("summary.json", "selection.json", "learning_curves.csv")]
    declared += [ds / "dataset.json"]
    for name in ("a", "b", "c"):
        ev = exp / "eval" / name / "fold0" / "seed0"
        declared += [ev / "per_image.csv", ev / "confusion.npy", ev / "metrics.json"]
    folders = [exp / "eval" / n / "fold0" / "seed0" / "predictions" for n in ("a", "b", "c")] + [ds]
    opened = []
    real_open = open

    def spy(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    monkeypatch.setattr("io.open", spy)  # pathlib's read_text / read_bytes
    monkeypatch.setattr(
        Image, "open", lambda fp, *a, _o=Image.open, **k: (opened.append(str(fp)), _o(fp, *a, **k))[1]
    )
    render_report(exp, ds, REPORT_CFG, tmp_path / "index.html")
    monkeypatch.undo()
    mine = {
        p for p in opened if p.startswith((str(exp), str(ds)))
    }  # the inputs (the page is written elsewhere)
    undeclared = {
        p for p in mine if p not in map(str, declared) and not any(p.startswith(str(f)) for f in folders)
    }
    assert len(mine) > len(declared) and not undeclared, sorted(undeclared)
