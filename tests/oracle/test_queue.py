"""Oracle evaluations on a real task queue: the listener plus worker processes over Redis.

The listener (``fedoracle oracle run --queue redis://...``) and two ``fedoracle oracle worker``
processes share only Redis, the blob store and (a copy of) the vault. 30 submissions arrive (jobs
that wait travel to a worker in chunks); one worker is SIGKILLed while it is evaluating, and its
jobs are redone by the other. Still exactly one verdict per submission, each right.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
import uuid

from fedoracle.blobstore import LocalBlobStore
from fedoracle.chain import Phase, dev_account
from fedoracle.errors import Reason
from fedoracle.procs import stop_process_groups
from tests.conftest import run
from tests.e2e.test_demo import processes_with_marker
from tests.oracle.kit import (
    ROOT,
    make_blob,
    oracle_argv,
    publish,
    spawn_oracle,
    submit,
    task_events,
    verdict_counts,
    wait_phase,
)

ORACLE = 5
FIRST_DEVICE = 40
KINDS = ["good", "noise", "nan", "good", "missing", "good"] * 5  # 30 submissions
WANT = {"good": Reason.OK, "noise": Reason.BELOW_THRESHOLD, "nan": Reason.NON_FINITE, "missing": Reason.MISSING_BLOB}


def worker_argv(queue: str, blobs, vault) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fedoracle.cli",
        "oracle",
        "worker",
        "--queue",
        queue,
        "--blob-store",
        str(blobs),
        "--vault",
        str(vault),
        "--idle-timeout",
        "3",
        "--log-format",
        "json",
    ]


def wait_for_log(path, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{needle!r} never appeared in {path}")


def test_listener_and_two_workers_over_redis_one_killed(node, reg, models, mnist, redis_server, tmp_path):
    blobs, vault = LocalBlobStore(tmp_path / "blobs"), tmp_path / "vault"
    pub = run(
        publish(
            reg, blobs, vault, models, mnist, oracle=dev_account(ORACLE).address, cap=len(KINDS), test_examples=2_000
        )
    )
    hashes = [make_blob(kind, blobs, models, models.initial, which=i % 2) for i, kind in enumerate(KINDS)]
    for i, h in enumerate(hashes):
        run(submit(node.rpc_url, reg.address, FIRST_DEVICE + i, pub.task_id, h, blobs))

    marker = uuid.uuid4().hex
    queue = redis_server.url.rsplit("/", 1)[0] + "/3"  # a database of its own
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    env = dict(os.environ, FEDORACLE_TEST_RUN=marker, FEDORACLE_TEST_SCORE_DELAY="0.5")
    workers = []
    procs = []
    try:
        for log in logs:
            with open(log, "ab") as out:
                workers.append(
                    __import__("subprocess").Popen(
                        worker_argv(queue, blobs.root, vault),
                        stdout=out,
                        stderr=out,
                        env=env,
                        cwd=ROOT,
                        start_new_session=True,
                    )
                )
        procs += workers
        listener = spawn_oracle(
            oracle_argv(
                node.rpc_url,
                reg.address,
                f"dev:{ORACLE}",
                blobs.root,
                vault,
                tmp_path / "state",
                pub.block,
                "--queue",
                queue,
                "--job-timeout",
                "60",
            ),
            tmp_path / "listener.log",
            marker,
        )
        procs.append(listener)
        # Kill the first worker while it is evaluating: right after it announces its second job.
        wait_for_log(logs[0], "scored", 240)
        deadline = time.monotonic() + 60
        while logs[0].read_text().count("scoring task") < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(workers[0].pid, signal.SIGKILL)
        held = [line for line in logs[0].read_text().splitlines() if "scoring task" in line][-1]
        held_device = held.rsplit("device=", 1)[-1].split()[0].strip('"}')
        run(
            wait_phase(
                reg,
                pub.task_id,
                Phase.FINALIZED,
                400,
                alive=lambda: listener.poll() is None and workers[1].poll() is None,
            )
        )
    finally:
        stop_process_groups(procs, 30)

    events = run(task_events(reg, pub.task_id, pub.block))
    counts = verdict_counts(events)
    assert len(counts) == len(KINDS) and set(counts.values()) == {1}  # exactly one verdict each
    by_device = {e.args["device"].lower(): e.args for e in events if e.name == "VerdictPosted"}
    for i, kind in enumerate(KINDS):
        assert Reason(by_device[dev_account(FIRST_DEVICE + i).address.lower()]["reason"]) == WANT[kind], kind
    scored = [[line for line in log.read_text().splitlines() if '"scored task' in line] for log in logs]
    assert not any(held_device in line for line in scored[0])  # the killed worker never finished it...
    assert any(held_device in line for line in scored[1])  # ...the other worker redid it
    assert len(scored[0]) + len(scored[1]) >= len(KINDS)
    # jobs that waited while messages were out travelled together: one score_many call per chunk
    chunks = [int(n) for log in logs for n in re.findall(r"chunk of (\d+)", log.read_text())]
    assert max(chunks) > 1
    assert processes_with_marker(marker) == []
