"""The tree shows the roles, and the import rules keep it so.

Every ``import`` statement of the project (module level and inside functions) is read with
:mod:`ast`: no role imports another role, the demo or the experiments; the shared core imports
no role, the demo or the experiments; the demo and the experiments may use every role (they start
and compare them). The ``fedoracle.commands`` entry points name every role's CLI.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = "fedoracle"
ROLES = ("publisher", "relay", "oracle", "devices")
TOOLS = ("demo", "experiments")


def imported_packages(package: str) -> dict[str, set[str]]:
    """``{module path: top-level packages it imports}`` for every module of ``package``."""
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tops: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                tops |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = tops
    return out


@pytest.mark.parametrize("package", [CORE, *ROLES])
def test_import_rules(package):
    forbidden = set(ROLES + TOOLS) - {package}
    broken = {mod: sorted(tops & forbidden) for mod, tops in imported_packages(package).items() if tops & forbidden}
    assert broken == {}


def test_the_reader_sees_it():
    """The check reads real imports: the demo does import roles (it starts them)."""
    assert any("relay" in tops for tops in imported_packages("demo").values())


def test_every_role_and_tool_is_a_plugged_in_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    commands = project["project"]["entry-points"]["fedoracle.commands"]
    assert {target.split(".")[0] for target in commands.values()} == set(ROLES + TOOLS)
    packaged = set(project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    assert packaged == {CORE, *ROLES, *TOOLS}
    assert all((ROOT / p / "__init__.py").exists() for p in packaged)
