"""Click options shared by the role CLIs (where the chain, the registry, the key, the blobs and the
broker are). Every role imports them from here, never from another role's CLI, so that each role
can be installed and run on its own. Standard library and click only (fast ``--help``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def rpc_option(f: F) -> F:
    """``--rpc-url`` / ``FEDORACLE_RPC_URL``: the chain's JSON-RPC URL."""
    return click.option("--rpc-url", envvar="FEDORACLE_RPC_URL", default="http://127.0.0.1:8545",
                        show_default=True, help="Chain JSON-RPC URL [env FEDORACLE_RPC_URL].")(f)


def registry_option(f: F) -> F:
    """``--registry`` / ``FEDORACLE_REGISTRY``: the FLTaskRegistry's address (required)."""
    return click.option("--registry", envvar="FEDORACLE_REGISTRY", required=True,
                        help="FLTaskRegistry address [env FEDORACLE_REGISTRY].")(f)


def key_option(f: F) -> F:
    """``--key`` / ``FEDORACLE_KEY``: where the signing key comes from (required)."""
    return click.option("--key", envvar="FEDORACLE_KEY", required=True,
                        help="Signing key: 0x<hex>, dev:<n> (dev chains), file:<path> or env:<VAR> "
                             "[env FEDORACLE_KEY].")(f)


def blobs_option(f: F) -> F:
    """``--blob-store`` / ``FEDORACLE_BLOB_STORE``: a blob store folder or an HTTP blob server."""
    return click.option("--blob-store", envvar="FEDORACLE_BLOB_STORE", default=".fedoracle/blobs",
                        show_default=True, help="Blob store folder or URL [env FEDORACLE_BLOB_STORE].")(f)


def broker_option(f: F) -> F:
    """``--broker-url`` / ``FEDORACLE_BROKER_URL``: the MQTT broker."""
    return click.option("--broker-url", envvar="FEDORACLE_BROKER_URL", default="mqtt://127.0.0.1:1883",
                        show_default=True, help="MQTT broker URL [env FEDORACLE_BROKER_URL].")(f)
