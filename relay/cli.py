"""``fedoracle relay ...`` and ``fedoracle blobs ...``: the relay's commands."""

from __future__ import annotations

import click

from fedoracle import aio
from fedoracle.options import broker_option, registry_option, rpc_option


@click.group()
def relay() -> None:
    """The chain→MQTT relay."""


@relay.command("run")
@rpc_option
@registry_option
@broker_option
@click.option("--from-block", default=0, show_default=True, help="Block to start relaying at.")
def relay_run(rpc_url: str, registry: str, broker_url: str, from_block: int) -> None:
    """Republish the registry's lifecycle events on MQTT until interrupted."""
    from relay.relay import Relay

    try:
        aio.run(Relay(rpc_url, registry, broker_url, from_block=from_block).run())
    except KeyboardInterrupt:
        pass


@click.group()
def blobs() -> None:
    """The blob server: model bytes by content hash over HTTP, for roles on other hosts."""


@blobs.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all interfaces).")
@click.option("--port", default=8600, show_default=True, help="TCP port (0: any free port, printed on start).")
@click.option("--root", default=".fedoracle/blobs", show_default=True, help="Folder the blobs are kept in.")
@click.option(
    "--max-bytes",
    default=64 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(min=1),
    help="Largest upload accepted, in bytes (413 above).",
)
@click.option(
    "--token",
    envvar="FEDORACLE_BLOB_TOKEN",
    default=None,
    help="Require 'Authorization: Bearer <token>' on uploads [env FEDORACLE_BLOB_TOKEN].",
)
def blobs_serve(host: str, port: int, root: str, max_bytes: int, token: str | None) -> None:
    """Serve a blob store folder over HTTP (PUT/GET /blobs/<hash>), verifying every upload's hash."""
    from relay.blobserver import serve

    def announce(url: str) -> None:
        click.echo(
            f"blob server listening on {url} (root {root}, max {max_bytes} bytes, "
            f"upload token {'required' if token else 'not required'})"
        )

    serve(root, host=host, port=port, max_bytes=max_bytes, token=token, announce=announce)
