"""Local infrastructure the project starts for itself: anvil, the MQTT broker, and their cleanup.

Used by the demo and the test fixtures alike. Each service binds a free loopback port, is
checked to be alive before it is handed out, and is stopped (with its process group) by
:meth:`stop` or at interpreter exit, so nothing is left listening.

The broker is Debian's mosquitto run from the project's own config (TCP no-delay on); where
mosquitto is not installed, an in-process amqtt broker runs in a background thread instead.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from fedoracle.errors import ServiceError, ToolMissing
from fedoracle.procs import stop_process_group

log = logging.getLogger(__name__)

_LIVE: set[Service] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Blocks until ``host:port`` accepts connections.

    Raises:
        ServiceError: when ``proc`` exits first or ``timeout`` passes.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{proc.args[0]} exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise ServiceError(f"nothing listening on {host}:{port} after {timeout}s")


class Service:
    """A child process started in its own session, stopped with its whole process group."""

    name = "service"

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    def _spawn(self, argv: list[str], log_path: Path) -> subprocess.Popen:
        out = open(log_path, "ab")
        self.proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        out.close()
        _LIVE.add(self)
        return self.proc

    @property
    def alive(self) -> bool:
        """Whether the service's process was started and has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Stops the process group (SIGTERM, then SIGKILL)."""
        if self.proc is not None:
            stop_process_group(self.proc, timeout)
        _LIVE.discard(self)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Anvil(Service):
    """A local anvil node (from the npm package ``@foundry-rs/anvil-linux-amd64``).

    Args:
        port: TCP port; a free one when ``None``.
        block_time: seconds between blocks; ``None`` mines a block per transaction.
        state_dir: where the log goes (a temporary folder when ``None``).
    """

    name = "anvil"

    def __init__(
        self,
        port: int | None = None,
        *,
        block_time: float | None = None,
        accounts: int = 20,
        balance_eth: int = 10_000,
        state_dir: Path | None = None,
    ) -> None:
        super().__init__()
        exe = shutil.which("anvil")
        if exe is None:
            raise ToolMissing("anvil is not on PATH: run through ./run, which installs it from npm")
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fedoracle-anvil-")
            state_dir = Path(self._tmp.name)
        self.port = port or free_port()
        argv = [
            exe,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--accounts",
            str(accounts),
            "--balance",
            str(balance_eth),
            "--silent",
        ]
        if block_time:
            argv += ["--block-time", str(block_time)]
        self._spawn(argv, Path(state_dir) / "anvil.log")
        wait_for_port("127.0.0.1", self.port, 30, self.proc)

    @property
    def rpc_url(self) -> str:
        """The node's HTTP JSON-RPC URL."""
        return f"http://127.0.0.1:{self.port}"


MOSQUITTO_CONF = """\
# fedoracle's own mosquitto config (loopback only, nothing persisted, Nagle off)
listener {port} {host}
allow_anonymous true
persistence false
set_tcp_nodelay true
max_inflight_messages 0
max_queued_messages 100000
log_dest file {log}
log_type error
log_type warning
pid_file {pid}
"""


def mosquitto_path() -> str | None:
    """The mosquitto executable, or ``None`` where it is not installed."""
    return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if os.access(p, os.X_OK)), None)


class Mosquitto(Service):
    """Debian's mosquitto from the project's own config on a free loopback port."""

    name = "mosquitto"

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        super().__init__()
        exe = mosquitto_path()
        if exe is None:
            raise ToolMissing("mosquitto is not installed (apt-get install mosquitto)")
        self._tmp = tempfile.TemporaryDirectory(prefix="fedoracle-mqtt-")
        tmp = Path(self._tmp.name)
        os.chmod(tmp, 0o777)  # mosquitto drops to its own user when started as root
        self.host, self.port = host, port or free_port(host)
        conf = tmp / "mosquitto.conf"
        conf.write_text(
            MOSQUITTO_CONF.format(port=self.port, host=host, log=tmp / "mosquitto.log", pid=tmp / "mosquitto.pid")
        )
        self._spawn([exe, "-c", str(conf)], tmp / "stdout.log")
        wait_for_port(host, self.port, 10, self.proc)
        time.sleep(0.02)
        if not self.alive:
            raise ServiceError(f"mosquitto died after opening its port: {(tmp / 'mosquitto.log').read_text()[-500:]}")

    def restart(self) -> None:
        """Stops and starts the broker on the same port (for fault tests)."""
        conf = Path(self._tmp.name) / "mosquitto.conf"
        if self.proc is not None:
            stop_process_group(self.proc, 5)
        self._spawn([mosquitto_path() or "mosquitto", "-c", str(conf)], Path(self._tmp.name) / "stdout.log")
        wait_for_port(self.host, self.port, 10, self.proc)

    @property
    def url(self) -> str:
        """The broker's ``mqtt://host:port`` URL."""
        return f"mqtt://{self.host}:{self.port}"


class EmbeddedBroker(Service):
    """The fallback: an amqtt broker on its own event loop in a daemon thread."""

    name = "amqtt"

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        super().__init__()
        from amqtt.broker import Broker

        self.host, self.port = host, port or free_port(host)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._loop = asyncio.new_event_loop()
        started = threading.Event()

        async def main() -> None:
            self._broker = Broker(config, loop=self._loop)
            await self._broker.start()
            started.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(main())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise ServiceError("embedded MQTT broker did not start")
        _LIVE.add(self)

    @property
    def alive(self) -> bool:
        """Whether the broker's thread is still running."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Shuts the broker down, stops its event loop and joins its thread.

        Args:
            timeout: seconds to wait for the shutdown, and then for the thread.
        """
        if self._thread.is_alive():
            fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            try:
                fut.result(timeout)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout)
        _LIVE.discard(self)

    @property
    def url(self) -> str:
        """The broker's ``mqtt://host:port`` URL."""
        return f"mqtt://{self.host}:{self.port}"


class RedisServer(Service):
    """Debian's redis-server on a free loopback port, nothing persisted (the evaluation queue)."""

    name = "redis"

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        super().__init__()
        exe = shutil.which("redis-server")
        if exe is None:
            raise ToolMissing("redis-server is not installed (apt-get install redis-server)")
        self._tmp = tempfile.TemporaryDirectory(prefix="fedoracle-redis-")
        self.host, self.port = host, port or free_port(host)
        self._spawn(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                host,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._tmp.name,
            ],
            Path(self._tmp.name) / "redis.log",
        )
        wait_for_port(host, self.port, 10, self.proc)

    @property
    def url(self) -> str:
        """The server's ``redis://host:port/0`` URL (database 0)."""
        return f"redis://{self.host}:{self.port}/0"


def start_broker(prefer: str = "auto") -> Mosquitto | EmbeddedBroker:
    """Mosquitto when installed (or ``prefer='mosquitto'``), else the embedded broker."""
    if prefer == "embedded" or (prefer == "auto" and mosquitto_path() is None):
        log.info("mosquitto not installed: using the embedded amqtt broker")
        return EmbeddedBroker()
    return Mosquitto()


def stop_all() -> None:
    """Stops every service this process started (also registered at exit)."""
    for svc in list(_LIVE):
        try:
            svc.stop()
        except Exception:
            log.exception("stopping %s", svc.name)


atexit.register(stop_all)
