"""One exception tree: every exception class of the project derives from FedoracleError, in fedoracle/errors.py.

The project's modules are read with :mod:`ast` (importing them would pull in TensorFlow): a class is an
exception when one of its bases is a built-in exception, a library class named ``*Error``/``*Exception``,
or another exception class of the project.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import re
from pathlib import Path

import pytest

import fedoracle.errors as errors

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fedoracle", "publisher", "relay", "oracle", "devices", "demo", "experiments")
ERRORS_MODULE = "fedoracle/errors.py"


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def project_classes() -> dict[str, list[tuple[str, list[str]]]]:
    """``{class name: [(module path, base names), ...]}`` for every class the packages define."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if isinstance(node, ast.ClassDef):
                    bases = [name for name in map(_base_name, node.bases) if name]
                    out.setdefault(node.name, []).append((rel, bases))
    return out


CLASSES = project_classes()


def _builtin_exception(name: str) -> bool:
    obj = getattr(builtins, name, None)
    return inspect.isclass(obj) and issubclass(obj, BaseException)


def is_exception(name: str, seen: frozenset[str] = frozenset()) -> bool:
    if name in seen:
        return False
    if name in CLASSES:
        return any(is_exception(b, seen | {name}) for _, bases in CLASSES[name] for b in bases)
    return _builtin_exception(name) or name.endswith(("Error", "Exception"))


def under_fedoracle_error(name: str, seen: frozenset[str] = frozenset()) -> bool:
    if name == "FedoracleError":
        return True
    if name in seen or name not in CLASSES:
        return False
    return all(any(under_fedoracle_error(b, seen | {name}) for b in bases) for _, bases in CLASSES[name])


EXCEPTIONS = sorted(name for name in CLASSES if name != "FedoracleError" and is_exception(name))


def test_the_reader_finds_the_exceptions():
    """The walk sees exception classes in more than one module (else the next test proves nothing)."""
    assert {"ChainError", "NonceTaken", "BlobStoreUnavailable", "ServiceError", "_Transient"} <= set(EXCEPTIONS)
    assert "Reason" not in EXCEPTIONS and "Phase" not in EXCEPTIONS  # enums are not exceptions


@pytest.mark.parametrize("name", EXCEPTIONS)
def test_every_exception_class_derives_from_fedoracle_error(name):
    assert under_fedoracle_error(name), f"{name} ({CLASSES[name]}) is outside the FedoracleError tree"


def test_public_exception_classes_live_in_the_errors_module():
    elsewhere = {
        name: [m for m, _ in CLASSES[name] if m != ERRORS_MODULE] for name in EXCEPTIONS if not name.startswith("_")
    }
    assert {name: mods for name, mods in elsewhere.items() if mods} == {}


def test_no_domain_failure_is_raised_as_a_bare_builtin():
    """``RuntimeError``, ``AssertionError`` and ``Exception`` say nothing a caller can catch on purpose."""
    bare = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Raise) and node.exc is not None:
                    target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                    if _base_name(target) in ("RuntimeError", "AssertionError", "Exception"):
                        bare.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert bare == []


def test_the_tree_in_the_errors_docstring_is_the_tree_in_the_code():
    tree = errors.__doc__.split("::", 1)[1].strip("\n").split("\n\n", 1)[0]
    documented = set(re.findall(r"^[\s│├└─]*(\w+)", tree, re.MULTILINE))
    defined = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == errors.__name__
    }
    assert documented == defined
    assert all(issubclass(getattr(errors, name), errors.FedoracleError) for name in defined)


def test_moved_classes_are_still_importable_where_they_were():
    from fedoracle import blobstore, chain

    assert chain.NonceTaken is errors.NonceTaken and chain.ChainError is errors.ChainError
    assert blobstore.BlobStoreUnavailable is errors.BlobStoreUnavailable
    assert blobstore.BlobUploadRefused is errors.BlobUploadRefused


def test_callers_that_catch_the_builtin_still_catch_the_subclass():
    assert issubclass(errors.DemoTimeout, TimeoutError)  # run_demo catches TimeoutError
    assert issubclass(errors.NonceTaken, errors.TransactionRejected)
    assert all(
        issubclass(c, errors.ChainError)
        for c in (errors.ChainUnreachable, errors.ChainReverted, errors.TransactionRejected, errors.TransactionNotMined)
    )
    assert issubclass(errors.ToolMissing, errors.ServiceError)
