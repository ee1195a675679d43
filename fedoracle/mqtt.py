"""MQTT for fedoracle: topic names, message schemas and a no-delay aiomqtt client.

Topics are versioned; every payload is JSON carrying the block number and transaction hash of the
chain event it reports, because MQTT is an untrusted transport: a device checks what it reads
against the contract before acting on it. Lifecycle topics are retained (a device that connects
late still sees the current task and round) and published with QoS 1.

=====================================================  ==========================================
``sfl/v1/tasks/<task>``                                 task spec and phase (retained)
``sfl/v1/tasks/<task>/rounds/<round>``                  round: global model, deadline (retained)
``sfl/v1/tasks/<task>/threshold``                       current threshold (retained)
``sfl/v1/tasks/<task>/verdicts/<device>``               a device's latest verdict (retained)
``sfl/v1/devices/<device>/presence``                    online/offline (last will; retained)
=====================================================  ==========================================
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pydantic import BaseModel

if TYPE_CHECKING:
    import aiomqtt

PREFIX = "sfl/v1"
QOS = 1


def task_topic(task_id: int | str) -> str:
    """The retained topic of a task's spec and phase (:class:`TaskMessage`)."""
    return f"{PREFIX}/tasks/{task_id}"


def round_topic(task_id: int | str, round_: int | str) -> str:
    """The retained topic of one round of a task: its global model and deadline (:class:`RoundMessage`)."""
    return f"{PREFIX}/tasks/{task_id}/rounds/{round_}"


def threshold_topic(task_id: int | str) -> str:
    """The retained topic of a task's current acceptance threshold (:class:`ThresholdMessage`)."""
    return f"{PREFIX}/tasks/{task_id}/threshold"


def verdict_topic(task_id: int | str, device: str) -> str:
    """The retained topic of a device's latest verdict in a task (:class:`VerdictMessage`).

    The device address is lower-cased, so checksummed and plain spellings share one topic.
    """
    return f"{PREFIX}/tasks/{task_id}/verdicts/{device.lower()}"


def presence_topic(device: str) -> str:
    """The retained topic of a device's online/offline state (its last will), address lower-cased."""
    return f"{PREFIX}/devices/{device.lower()}/presence"


class _Msg(BaseModel):
    """What every message carries: the chain event it reports, for the reader to check on-chain."""

    registry: str
    chain_id: int
    block_number: int
    tx_hash: str


class TaskMessage(_Msg):
    """A task as published, plus its current phase."""

    task_id: int
    publisher: str
    oracle: str
    reward_wei: int
    model_spec_hash: str
    initial_model_hash: str
    initial_model_uri: str
    threshold_bp: int
    max_rounds: int
    phase: str


class RoundMessage(_Msg):
    """A round opened: which global model to train from, and until when."""

    task_id: int
    round: int
    global_model_hash: str
    global_model_uri: str
    deadline: int


class ThresholdMessage(_Msg):
    """The acceptance threshold (basis points) in force for a task's round."""

    task_id: int
    round: int
    threshold_bp: int


class VerdictMessage(_Msg):
    """The oracle's verdict on one device's submission: its accuracy, reason code and acceptance."""

    task_id: int
    round: int
    device: str
    model_hash: str
    accuracy_bp: int
    reason: int
    accepted: bool


def parse_url(url: str) -> tuple[str, int]:
    """``mqtt://host:port`` → ``(host, port)``."""
    parsed = urlparse(url if "://" in url else f"mqtt://{url}")
    if parsed.scheme not in ("mqtt", "tcp"):
        raise ValueError(f"unsupported broker URL {url!r} (want mqtt://host:port)")
    return parsed.hostname or "127.0.0.1", parsed.port or 1883


def client(
    url: str, identifier: str | None = None, *, will: tuple[str, bytes] | None = None, **kwargs: Any
) -> aiomqtt.Client:
    """An ``aiomqtt.Client`` for ``url`` with TCP no-delay (every hop waits ~40 ms without it).

    Args:
        url: ``mqtt://host:port``.
        identifier: the MQTT client id.
        will: ``(topic, payload)`` of a retained QoS 1 last will.
        **kwargs: passed to ``aiomqtt.Client``.

    Returns:
        The client, not yet connected (enter it with ``async with``).
    """
    import aiomqtt

    host, port = parse_url(url)
    will_obj = aiomqtt.Will(will[0], will[1], qos=QOS, retain=True) if will else None
    return aiomqtt.Client(
        host,
        port,
        identifier=identifier,
        will=will_obj,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        **kwargs,
    )
