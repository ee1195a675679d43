"""Several hosts on one machine: network namespaces joined by veth links, made and removed here.

Host ``srv`` runs anvil, mosquitto, the HTTP blob server, the relay and the oracle; hosts ``d1``
and ``d2`` each run a device fleet process that reaches them only over its veth link (RPC,
broker and blobs by URL, nothing shared on disk). This test process is the publisher, on a third
link. A whole round completes with verdicts and claims on-chain.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from demo.services import MOSQUITTO_CONF, mosquitto_path, wait_for_port
from fedoracle.blobstore import open_store
from fedoracle.chain import Chain, Phase, Status, TaskRegistry, dev_account
from fedoracle.procs import stop_process_groups
from publisher.publish import TaskPlan, publish_task
from tests.conftest import run

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or mosquitto_path() is None or shutil.which("anvil") is None,
    reason="needs root, iproute2 (ip netns), mosquitto and anvil",
)

RPC, MQTT, BLOBS = 8545, 1883, 8600


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


class Hosts:
    """Namespaces ``srv``, ``d1``, ``d2`` (and the test's own link to ``srv``) on 10.231.x.0/24."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns = {name: f"fo{tag}{name}" for name in ("srv", "d1", "d2")}
        self.links: list[str] = []
        self.procs: list[subprocess.Popen] = []
        for name in self.ns.values():
            sh("ip", "netns", "add", name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        # subnet 0: this process (root namespace) <-> srv; 1: d1 <-> srv; 2: d2 <-> srv
        self._link(f"fo{tag}h0", None, 0)
        self._link(f"fo{tag}h1", self.ns["d1"], 1)
        self._link(f"fo{tag}h2", self.ns["d2"], 2)

    def _link(self, veth: str, peer_ns: str | None, subnet: int) -> None:
        srv = self.ns["srv"]
        sh("ip", "link", "add", veth + "a", "type", "veth", "peer", "name", veth + "b")
        self.links.append(veth + "a")
        sh("ip", "link", "set", veth + "a", "netns", srv)
        sh("ip", "-n", srv, "addr", "add", f"10.231.{subnet}.1/24", "dev", veth + "a")
        sh("ip", "-n", srv, "link", "set", veth + "a", "up")
        if peer_ns is None:
            sh("ip", "addr", "add", f"10.231.{subnet}.2/24", "dev", veth + "b")
            sh("ip", "link", "set", veth + "b", "up")
            self.links.append(veth + "b")
        else:
            sh("ip", "link", "set", veth + "b", "netns", peer_ns)
            sh("ip", "-n", peer_ns, "addr", "add", f"10.231.{subnet}.2/24", "dev", veth + "b")
            sh("ip", "-n", peer_ns, "link", "set", veth + "b", "up")

    def spawn(self, host: str, argv: list[str], log: Path) -> subprocess.Popen:
        out = open(log, "wb")  # the child owns it: Popen dups the descriptor, so close ours below
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[host], *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        stop_process_groups(self.procs, 10)
        for name in self.ns.values():
            subprocess.run(["ip", "netns", "pids", name], capture_output=True)  # (for logs on failure)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        for link in self.links:  # the root-namespace end, if it outlived its peer
            subprocess.run(["ip", "link", "del", link], capture_output=True)


@pytest.fixture
def hosts():
    h = Hosts()
    yield h
    h.close()
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in leftover for n in h.ns.values())


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedoracle.cli", "-v", *args]


@pytest.mark.slow  # 28 s of network namespaces; one host's round is in tests/e2e
def test_a_round_across_three_hosts(hosts, tmp_path, request):
    srv_ip = {0: "10.231.0.1", 1: "10.231.1.1", 2: "10.231.2.1"}
    mq = Path(tempfile.mkdtemp(prefix="fedoracle-netns-mqtt-"))  # mosquitto runs as its own user:
    os.chmod(mq, 0o777)  # its files must live where that user can write (pytest's tmp is 0700)
    request.addfinalizer(lambda: shutil.rmtree(mq, ignore_errors=True))
    conf = mq / "mosquitto.conf"
    conf.write_text(
        MOSQUITTO_CONF.format(port=MQTT, host="0.0.0.0", log=mq / "mosquitto.log", pid=mq / "mosquitto.pid")
    )
    hosts.spawn(
        "srv", [shutil.which("anvil"), "--host", "0.0.0.0", "--port", str(RPC), "--silent"], tmp_path / "anvil.log"
    )
    hosts.spawn("srv", [mosquitto_path(), "-c", str(conf)], tmp_path / "mosquitto.out")
    hosts.spawn(
        "srv",
        cli("blobs", "serve", "--host", "0.0.0.0", "--port", str(BLOBS), "--root", str(tmp_path / "srv-blobs")),
        tmp_path / "blobs.log",
    )
    for port in (RPC, MQTT, BLOBS):
        wait_for_port(srv_ip[0], port, 60)

    # The publisher (this process, on link 0) deploys and publishes through the network only.
    rpc0, blobs0 = f"http://{srv_ip[0]}:{RPC}", open_store(f"http://{srv_ip[0]}:{BLOBS}")
    registry = run(TaskRegistry.deploy(Chain(rpc0, dev_account(0))))
    plan = TaskPlan(
        dataset="mnist",
        architecture="small_cnn",
        rounds=1,
        threshold=0.5,
        groups_per_round=1,
        test_examples=1_000,
        max_submissions_per_round=4,
        reward_eth=0.4,
    )
    vault = tmp_path / "vault"  # the hidden test set, handed to the oracle host
    published = run(publish_task(registry, blobs0, vault, plan, dev_account(1).address))

    local = f"http://127.0.0.1:{RPC}"
    hosts.spawn(
        "srv",
        cli(
            "relay",
            "run",
            "--rpc-url",
            local,
            "--registry",
            registry.address,
            "--broker-url",
            f"mqtt://127.0.0.1:{MQTT}",
        ),
        tmp_path / "relay.log",
    )
    hosts.spawn(
        "srv",
        cli(
            "oracle",
            "run",
            "--rpc-url",
            local,
            "--registry",
            registry.address,
            "--key",
            "dev:1",
            "--blob-store",
            f"http://127.0.0.1:{BLOBS}",
            "--vault",
            str(vault),
            "--state-dir",
            str(tmp_path / "oracle"),
        ),
        tmp_path / "oracle.log",
    )
    for fleet, first in ((1, 0), (2, 2)):
        ip = srv_ip[fleet]
        hosts.spawn(
            f"d{fleet}",
            cli(
                "devices",
                "run",
                "--rpc-url",
                f"http://{ip}:{RPC}",
                "--registry",
                registry.address,
                "--broker-url",
                f"mqtt://{ip}:{MQTT}",
                "--blob-store",
                f"http://{ip}:{BLOBS}",
                "--count",
                "2",
                "--first-index",
                str(first),
                "--fleet-size",
                "4",
                "--malicious",
                "0.25",
                "--unreliable",
                "0",
                "--flip-rate",
                "1.0",
                "--fund-from",
                f"dev:{1 + fleet}",
                "--task",
                str(published.task_id),
            ),
            tmp_path / f"fleet{fleet}.log",
        )

    task_id = published.task_id
    deadline = time.monotonic() + 400
    while run(registry.get_state(task_id))["phase"] != Phase.FINALIZED:
        dead = [p.args for p in hosts.procs if p.poll() is not None]
        assert not dead, f"a host process died: {dead}; logs in {tmp_path}"
        assert time.monotonic() < deadline, (tmp_path / "oracle.log").read_text()[-3000:]
        time.sleep(1)

    rec = run(registry.get_round(task_id, 1))
    assert rec["submissions"] == 4 and rec["accepted"] == 3  # the one malicious device is rejected
    events = run(registry.get_events(published.block_number, run(registry.chain.block_number())))
    submitters = {e.args["device"] for e in events if e.name == "ModelSubmitted"}
    assert len(submitters) == 4
    deadline = time.monotonic() + 120
    while True:  # every accepted device claims by itself once the task is finalized
        statuses = [run(registry.get_verdict(task_id, 1, d))["status"] for d in submitters]
        if statuses.count(Status.CLAIMED) == 3 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert statuses.count(Status.CLAIMED) == 3
    assert statuses.count(Status.REJECTED) == 1
