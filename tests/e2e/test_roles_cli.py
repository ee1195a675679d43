"""The roles run one by one, as the README shows, through the CLI only (flags and environment).

deploy → task publish → relay run, oracle run, devices run (separate processes) → status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

from fedoracle.procs import stop_process_groups
from tests.e2e.test_demo import noise_in, processes_with_marker


def fedoracle(*args: str, env: dict, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fedoracle.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        **kwargs,
    )


def test_roles_one_by_one_from_the_command_line(anvil, broker, tmp_path):
    marker = uuid.uuid4().hex
    env = dict(
        os.environ,
        FEDORACLE_TEST_RUN=marker,
        FEDORACLE_RPC_URL=anvil.rpc_url,
        FEDORACLE_BROKER_URL=broker.url,
        FEDORACLE_BLOB_STORE=str(tmp_path / "blobs"),
    )
    env["FEDORACLE_REGISTRY"] = fedoracle("deploy", "--key", "dev:0", env=env).stdout.strip()
    oracle = fedoracle("deploy", "--key", "dev:0", env=env)  # a second registry: ignored below
    assert oracle.stdout.strip() != env["FEDORACLE_REGISTRY"]
    oracle_address = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # dev:1
    published = json.loads(
        fedoracle(
            "task",
            "publish",
            "--key",
            "dev:0",
            "--oracle",
            oracle_address,
            "--vault",
            str(tmp_path / "vault"),
            "--rounds",
            "1",
            "--threshold",
            "0.5",
            "--max-submissions",
            "3",
            "--reward",
            "0.3",
            env=env,
        ).stdout
    )
    task_id = published["task_id"]
    assert published["spec_hash"].startswith("0x") and published["test_set_root"].startswith("0x")

    procs = []
    try:
        for name, args in (
            ("relay", ["relay", "run", "--from-block", str(published["block"])]),
            (
                "oracle",
                [
                    "oracle",
                    "run",
                    "--key",
                    "dev:1",
                    "--vault",
                    str(tmp_path / "vault"),
                    "--state-dir",
                    str(tmp_path / "oracle"),
                ],
            ),
            (
                "devices",
                [
                    "devices",
                    "run",
                    "--count",
                    "3",
                    "--malicious",
                    "0",
                    "--unreliable",
                    "0",
                    "--fund-from",
                    "dev:2",
                    "--task",
                    str(task_id),
                    "--key-seed",
                    marker,
                ],
            ),
        ):
            with open(tmp_path / f"{name}.log", "wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "fedoracle.cli", *args],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + 300
        while True:
            status = json.loads(fedoracle("status", str(task_id), "--json", env=env).stdout)
            claimed = [s for s in status["submissions"] if s.get("claimed")]
            if status["phase"] == "finalized" and len(claimed) == 3:
                break
            assert all(p.poll() is None for p in procs), [(p.args[3], p.returncode) for p in procs]
            assert time.monotonic() < deadline, (tmp_path / "oracle.log").read_text()[-3000:]
            time.sleep(1)
    finally:
        stop_process_groups(procs, 30)

    assert status["rounds"][0]["accepted"] == 3
    assert all(s["verdict"]["accepted"] for s in status["submissions"])
    assert status["registry_balance_wei"] == 0  # one round: the whole pool paid out, nothing left
    table = fedoracle("status", str(task_id), env=env).stdout  # the human view renders too
    assert "finalized" in table
    assert processes_with_marker(marker) == []
    # The fleet shows its progress at the default log level (no -v), and no role printed noise.
    fleet_log = (tmp_path / "devices.log").read_text()
    assert "submitted 0x" in fleet_log and f"for task {task_id} round 1" in fleet_log, fleet_log[-2000:]
    assert "claimed" in fleet_log, fleet_log[-2000:]
    noise = [
        line
        for name in ("relay", "oracle", "devices")
        for line in noise_in(name, (tmp_path / f"{name}.log").read_text())
    ]
    assert noise == [], "\n".join(noise)
