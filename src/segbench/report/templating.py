"""The Jinja2 environment of segbench's templates (``templates/``): HTML autoescaped, Markdown not."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["render_template", "TEMPLATES"]

#: the folder of the templates (package data; part of the report and best steps' code fingerprint)
TEMPLATES = Path(__file__).resolve().parent / "templates"


@cache
def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2", "html")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_template(name: str, **context: Any) -> str:
    """Render ``templates/<name>`` (``*.html.j2`` autoescaped; ``*.md.j2`` not).

    Raises:
        jinja2.UndefinedError: the template uses a value the context does not have.
    """
    return _environment().get_template(name).render(**context)
