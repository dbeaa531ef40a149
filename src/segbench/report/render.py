"""The report step: ``report/index.html``, one self-contained page (plots embedded as PNG data URIs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import atomic_write_text
from .context import build_context
from .templating import render_template

__all__ = ["render_report"]


def render_report(
    experiment_dir: str | Path,
    dataset_dir: str | Path,
    report_cfg: dict[str, Any],
    out_path: str | Path,
    select_cfg: dict[str, Any] | None = None,
    plan_json: str | Path | None = None,
    deploy_json: str | Path | None = None,
) -> str:
    """Render ``report/index.html`` for an experiment: :func:`~segbench.report.context.build_context`
    laid out by ``templates/page.html.j2``; written atomically. The page needs no network to display.

    Args:
        experiment_dir: ``results/<experiment>`` (summary.json, learning_curves.csv, eval/ ...).
        dataset_dir: the canonical dataset folder (images and masks for the overlays).
        report_cfg: ``{title, n_overlays, overlay_alpha, n_worst}``.
        out_path: the HTML file to write.
        select_cfg: the ``select`` config (number of bootstrap resamples, ONNX on or off).
        plan_json: the training plan, when the recipe left keys to it (its section of the page).
        deploy_json: ``deploy/summary.json``, when deployment variants were built (their section).

    Returns:
        The HTML text.

    Raises:
        FileNotFoundError: an input is missing (names the file and the step that writes it).
    """
    html = render_template(
        "page.html.j2",
        **build_context(
            experiment_dir, dataset_dir, report_cfg, select_cfg, plan_json=plan_json, deploy_json=deploy_json
        ),
    )
    atomic_write_text(out_path, html)
    return html
