"""Every option of every command says in ``--help`` which ``FEDORACLE_*`` variable sets it, and its unit.

Walked over the whole command tree (the core's commands and every plugged-in role), so an option
added later is checked too. The variable named is checked against what click really reads.
"""

from __future__ import annotations

import re

import click
import pytest

from fedoracle.cli import main


def walk(cmd: click.Command, path: tuple[str, ...], ctx: click.Context):
    """(path, command, options) of every command under ``cmd``, the groups included."""
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None
            yield from walk(sub, (*path, name), click.Context(sub, parent=ctx, info_name=name))


ROOT = click.Context(main, info_name="fedoracle", auto_envvar_prefix="FEDORACLE")
OPTIONS = [
    pytest.param(path, param, id=" ".join((*path, param.opts[0])))
    for path, cmd in walk(main, (), ROOT)
    for param in cmd.params
    if isinstance(param, click.Option) and param.name not in ("help", "version")
]
NUMERIC = (click.types.IntParamType, click.types.FloatParamType)
#: Words that say what a number counts or measures; a numeric option's help must use one.
UNITS = re.compile(
    r"second|minute|ETH|wei|block|byte|port|fraction|\[0, 1\]|\[0, 2\]|\(0, 1\)|share|devices?\b|\bP\b|"
    r"examples|epochs?|rounds?|threads|evaluations|runs|index|task id|norm|learning rate|ε|δ|submissions|seed|"
    r"basis points",
    re.IGNORECASE,
)


def named_variable(param: click.Option) -> str:
    found = re.search(r"\[env (FEDORACLE_[A-Z0-9_]+)\]", param.help or "")
    assert found, f"{param.opts[0]}: help names no FEDORACLE_* variable: {param.help!r}"
    return found.group(1)


def sample(param: click.Option) -> tuple[str, object]:
    """A valid value for ``param`` as an environment variable holds it, and what click should make of it."""
    t = param.type
    if param.is_flag:
        return "1", True
    if isinstance(t, click.Choice):
        return t.choices[0], t.choices[0]
    if isinstance(t, click.types.IntParamType):
        low = getattr(t, "min", None)
        value = 3 if low is None else int(low) + 1
        return str(value), value
    if isinstance(t, click.types.FloatParamType):
        low, high = getattr(t, "min", None), getattr(t, "max", None)
        value = 0.5 if high is not None and high <= 2 else (low or 0) + 0.5
        if high is not None and getattr(t, "max_open", False) and value >= high:
            value = high / 2  # an open upper bound (e.g. β < 0.5) does not take itself
        return str(value), value
    return "some-value", "some-value"


def parse(path: tuple[str, ...], env: dict[str, str], monkeypatch) -> dict:
    """The parameters click gives the command at ``path`` with no arguments and ``env`` set."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    ctx = main.make_context("fedoracle", list(path), resilient_parsing=True, auto_envvar_prefix="FEDORACLE")
    cmd: click.Command = main
    for name in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.get_command(ctx, name)
        ctx = cmd.make_context(name, [], parent=ctx, resilient_parsing=True)
    return ctx.params


@pytest.mark.parametrize(("path", "param"), OPTIONS)
def test_every_option_names_the_variable_click_reads(path, param, monkeypatch):
    variable = named_variable(param)
    raw, expected = sample(param)
    got = parse(path, {variable: raw}, monkeypatch)[param.name]
    if param.multiple:
        got = list(got)[0] if got else None
    assert got == expected, f"{variable}={raw} gave {param.opts[0]} = {got!r}"


#: Numeric options with a unit to name (``-v`` counts flags: it has none).
MEASURES = [p for p in OPTIONS if isinstance(p.values[1].type, NUMERIC) and not p.values[1].count]


@pytest.mark.parametrize(("path", "param"), MEASURES)
def test_every_numeric_option_names_its_unit(path, param):
    text = re.sub(r"\[env [A-Z0-9_]+\]", "", param.help or "")  # the variable's name does not count
    assert UNITS.search(text), f"{param.opts[0]}: no unit in {param.help!r}"


def test_the_tree_is_walked_whole():
    paths = {" ".join(p.values[0]) for p in OPTIONS}
    assert {"", "status", "devices run", "devices claim", "oracle run", "task publish", "demo", "relay run"} <= paths
