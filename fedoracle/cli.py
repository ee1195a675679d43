"""The ``fedoracle`` command line: the core's commands plus the roles' plugged-in groups.

Every role's commands (``task``/``deploy``: the publisher; ``relay``/``blobs``: the relay;
``oracle``; ``devices``) and the ``demo`` and ``experiment`` groups come from the
``fedoracle.commands`` entry points (declared in pyproject.toml), so the core never imports a
role. Nothing on the start-up path imports TensorFlow: commands import what they compute with
when they run.
"""

from __future__ import annotations

import json
import logging
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click

from fedoracle import __version__, aio
from fedoracle.options import blobs_option, from_block_option, registry_option, rpc_option


class PluginGroup(click.Group):
    """A click group that adds the role CLIs registered under ``fedoracle.commands``."""

    def _plugins(self) -> dict[str, EntryPoint]:
        return {ep.name: ep for ep in entry_points(group="fedoracle.commands")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The core's own commands and every plugged-in role's, sorted by name."""
        return sorted(set(super().list_commands(ctx)) | set(self._plugins()))

    def invoke(self, ctx: click.Context) -> Any:
        """Runs the command; a project error is one line (``Error: ...``, exit 1), ``-v`` adds its traceback."""
        from fedoracle.errors import FedoracleError

        try:
            return super().invoke(ctx)
        except FedoracleError as exc:
            if ctx.params.get("verbose"):
                raise
            raise click.ClickException(f"{exc} ({type(exc).__name__}; -v for the traceback)") from exc

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        """The command ``name``: the core's own, else the entry point's, loaded only now (fast ``--help``).

        Every option's help then names its ``FEDORACLE_*`` variable (:func:`name_variables`).
        """
        cmd = super().get_command(ctx, name)
        if cmd is None and name in self._plugins():
            cmd = self._plugins()[name].load()
        if cmd is not None:
            name_variables(cmd, f"{ctx.auto_envvar_prefix or 'FEDORACLE'}_{name}")
        return cmd


def name_variables(cmd: click.Command, prefix: str) -> None:
    """Appends ``[env NAME]`` to the help of each option of ``cmd`` (and its subcommands) that lacks one.

    ``NAME`` is the option's own ``envvar``, else the variable click reads for it under the root
    group's ``auto_envvar_prefix``: ``FEDORACLE_<COMMAND PATH>_<PARAMETER>``, e.g.
    ``FEDORACLE_ORACLE_RUN_POLL_INTERVAL`` (the same rule as click's ``Context``: upper case, ``-``
    as ``_``). Idempotent.

    Args:
        cmd: a command or group.
        prefix: its context's variable prefix (``FEDORACLE_`` plus the command path).
    """
    prefix = prefix.upper().replace("-", "_")
    for param in cmd.params:
        if not isinstance(param, click.Option) or param.name in (None, "help", "version"):
            continue
        if "[env " in (param.help or ""):
            continue
        envvar = param.envvar if isinstance(param.envvar, str) else None
        if envvar is None and param.allow_from_autoenv:
            envvar = f"{prefix}_{param.name.upper()}"
        if envvar:
            param.help = f"{(param.help or '').rstrip()} [env {envvar}]".lstrip()
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            name_variables(sub, f"{prefix}_{name}")


def setup_logging(verbose: int) -> None:
    """Structured-ish logs: ``time level logger message`` (``-v`` for debug)."""
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s %(message)s", stream=sys.stderr)


@click.group(
    cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "FEDORACLE"}
)
@click.version_option(__version__, prog_name="fedoracle")
@click.option("-v", "--verbose", count=True, help="More logs (-v info, -vv debug).")
def main(verbose: int) -> None:
    """fedoracle: a secure federated-learning marketplace on Ethereum.

    A task contract escrows the reward and commits the hidden test set; devices train with local
    differential privacy and submit model updates; an oracle evaluates them with TensorFlow
    Federated, posts verdicts on-chain, aggregates, and accepted devices claim their reward.
    """
    setup_logging(verbose)


name_variables(main, "FEDORACLE")  # the root's own options and the core's commands (plugins: as they load)


# --- core commands ------------------------------------------------------------------------------


@main.command()
@rpc_option
@registry_option
@click.argument("task_id", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@from_block_option
def status(rpc_url: str, registry: str, task_id: int, as_json: bool, from_block: int) -> None:
    """Show a task's phase, deadline, rounds, submissions, verdicts, privacy budget and balances."""
    from fedoracle.status import render_status, task_status

    report = aio.run(task_status(rpc_url, registry, task_id, from_block))
    if as_json:
        click.echo(json.dumps(report, indent=1, default=str))
    else:
        render_status(report)


@main.command()
@rpc_option
@registry_option
@blobs_option
@click.argument("task_id", type=click.IntRange(min=1))
@click.option("--round", "round_", type=click.IntRange(min=1), default=None, help="Re-check only this round.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@from_block_option
def verify(
    rpc_url: str,
    registry: str,
    blob_store: str,
    task_id: int,
    round_: int | None,
    as_json: bool,
    from_block: int,
) -> None:
    """Re-check every verdict and the global model of a task's settled rounds, from the chain alone.

    Needs no key and no vault: the disclosed seal secret opens each submission, the disclosed test
    groups score it with the oracle's evaluation, and the accepted updates are aggregated again.
    Exit 0 when everything agrees, 1 when anything differs (one line each), 2 for bad input.
    """
    from fedoracle.blobstore import open_store
    from fedoracle.errors import ConfigError, FedoracleError
    from fedoracle.verify import verify_task

    try:
        try:
            blobs = open_store(blob_store)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        checks = aio.run(verify_task(rpc_url, registry, blobs, task_id, round_, from_block=from_block))
    except FedoracleError as exc:
        err = click.ClickException(f"{exc} ({type(exc).__name__})")
        err.exit_code = 2
        raise err from None
    agrees = all(c.agrees for c in checks)
    if as_json:
        click.echo(
            json.dumps({"task_id": task_id, "agrees": agrees, "rounds": [c.as_dict() for c in checks]}, indent=1)
        )
    else:
        for check in checks:
            click.echo(check.summary())
            for d in check.disagreements:
                click.echo(d.line())
    sys.exit(0 if agrees else 1)


if __name__ == "__main__":
    main()
