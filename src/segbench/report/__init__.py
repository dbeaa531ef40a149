"""The comparison report and the selected model's card, rendered from Jinja2 templates.

* :mod:`.render`: :func:`~.render.render_report`, the report step;
* :mod:`.context`: every file the report reads and every number it shows (:func:`build_context`);
* :mod:`.plots`: one function per figure (PNG data URIs, so the page displays offline) and the
  class-colour :func:`~.plots.overlay` that ``segbench predict`` writes too;
* ``templates/``: ``page.html.j2`` (the report, autoescaped), ``model_card.md.j2`` and
  ``best_readme.md.j2`` (``best/MODEL_CARD.md`` and ``best/README.md``);
* :mod:`.templating`: the Jinja2 environment (:func:`~.templating.render_template`);
* :mod:`.check`: the report as headless Chromium shows it (``segbench check-report``).

The modules are imported one by one (``from segbench.report.render import render_report``), so
that packaging ``best/`` (which renders the model card) does not depend on the report's figures.
"""
