"""The code style CI holds the project to: ruff (lint, with line length and complexity, and format)
and snakefmt on the workflow. Each check runs the tool the way a developer would."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name if (BIN / name).is_file() else shutil.which(name)
    if not path:
        pytest.fail(
            f"{name} is not installed; install the test extras: pip install -c constraints.txt -e '.[test]'"
        )
    return str(path)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ruff_lint_is_clean_with_line_length_and_complexity():
    r = _run(_tool("ruff"), "check", "src", "tests", "bench")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_ruff_format_leaves_every_file_as_it_is():
    r = _run(_tool("ruff"), "format", "--check", "src", "tests", "bench")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_snakefmt_leaves_the_workflow_as_it_is():
    r = _run(_tool("snakefmt"), "--check", "workflow")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_the_style_checks_can_fail(tmp_path):
    """The checks above are not vacuous: an over-long line and an unformatted rule are reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("x = '" + "a" * 120 + "'\n")
    r = _run(_tool("ruff"), "check", "--config", str(REPO / "pyproject.toml"), str(bad))
    assert r.returncode != 0 and "E501" in r.stdout
    rule = tmp_path / "Snakefile"
    rule.write_text('rule a:\n    output: "x"\n    shell: "touch {output}"\n')
    r = _run(_tool("snakefmt"), "--check", str(rule))
    assert r.returncode != 0
