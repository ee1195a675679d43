"""The command line: every group answers --help, and start-up never imports TensorFlow.

The import rules between the packages are in ``test_layout.py``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from fedoracle.cli import main


@pytest.mark.parametrize(
    "args",
    [[], ["oracle"], ["devices"], ["task"], ["deploy"], ["relay"], ["blobs"], ["demo"], ["experiment"], ["status"]],
)
def test_help_answers(args):
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["oracle", "--help"],
        ["devices", "run", "--help"],
        ["demo", "--help"],
        ["task", "publish", "--help"],
        ["relay", "run", "--help"],
        ["experiment", "--help"],
        ["verify", "--help"],
    ],
)
def test_cli_start_up_imports_no_tensorflow(args):
    """``python -X importtime`` lists every module imported on the path: no TF, no TFF."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "fedoracle.cli", *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert len(imported) > 50  # the listing is really there
    heavy = [m for m in imported if m.split(".")[0] in {"tensorflow", "tensorflow_federated", "keras", "ape", "jax"}]
    assert heavy == []
