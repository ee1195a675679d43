"""The README's main job with tiny settings, run as a user runs it (a subprocess of the CLI)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest


def processes_with_marker(marker: str) -> list[str]:
    """Live processes whose environment carries ``marker`` (every child inherits it)."""
    found = []
    for p in psutil.process_iter(["pid", "name"]):
        try:
            if f"FEDORACLE_TEST_RUN={marker}" in "\0".join(f"{k}={v}" for k, v in p.environ().items()):
                found.append(f"{p.pid}:{p.info['name']}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


#: What a clean run must never print, in its output or in any role's log (issue 15): a traceback
#: (TFF's ``ServiceManager.__del__`` at exit), aiohttp's warning about a web3 session never closed,
#: TensorFlow's C++ start-up warnings, and an exception Python could only ignore.
NOISE = ("Traceback", "Unclosed client session", "Unclosed connector", "Unable to register", "Exception ignored")


def noise_in(name: str, text: str) -> list[str]:
    """The lines of ``text`` that carry one of :data:`NOISE`, prefixed with ``name``."""
    return [f"{name}: {line[:160]}" for line in text.splitlines() if any(n in line for n in NOISE)]


def test_demo_runs_the_whole_task_and_cleans_up(tmp_path):
    marker = uuid.uuid4().hex
    env = dict(os.environ, FEDORACLE_TEST_RUN=marker, COLUMNS="400")  # rich wraps at 80 columns otherwise
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the project's own default, not the caller's, must keep it quiet
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedoracle.cli",
            "demo",
            "--devices",
            "10",
            "--rounds",
            "2",
            "--out",
            str(tmp_path),
            "--timeout",
            "400",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Task 1 — finalized" in proc.stdout
    (run_dir,) = list(tmp_path.iterdir())
    report = json.loads((run_dir / "report.json").read_text())
    for name in ("accuracy.png", "verdicts.png"):
        assert (run_dir / name).stat().st_size > 10_000

    accuracies = [r["global_accuracy"] for r in report["rounds"]]
    assert len(accuracies) == 2 and accuracies[1] > accuracies[0]
    assert report["phase"] == "finalized"
    verdicts = report["verdicts_by_class"]
    assert verdicts["malicious"].get("accepted", 0) == 0 and verdicts["malicious"]["rejected"] == 4
    assert verdicts["honest"]["accepted"] >= 10  # 6 honest devices x 2 rounds, nearly all accepted
    rewards = report["rewards_wei_by_class"]
    assert rewards["honest"] > 0 and rewards["malicious"] == 0
    # Every wei is accounted for: claimed by devices or refunded to the publisher, none left behind.
    assert report["registry_balance_wei"] == 0
    assert sum(rewards.values()) + report["refunded_wei"] == report["reward_wei"]
    # Record-level DP-SGD: ε = 8 is each device's budget for the whole task, spent and never exceeded.
    assert 7.9 <= report["epsilon_spent"]["max"] <= 8.0
    said = "at δ = 1e-05, per device, one record (training example) of the device added or removed, over 2 rounds"
    assert re.search(r"privacy spent, at most: ε = (7\.9\d|8\.00) " + re.escape(said), proc.stdout), proc.stdout
    # The privacy audit: the attack on every honest release, beside its chance level and its bound.
    audit = report["privacy_audit"]
    assert audit["releases"] == verdicts["honest"]["accepted"] + verdicts["honest"].get("rejected", 0)
    assert 0 < audit["chance_mean_q95"] < audit["bound"] < 1  # ε = 8 over 2 rounds bounds the advantage
    assert audit["advantage_mean"] <= audit["bound"]
    assert "membership inference" in proc.stdout
    assert {"submit", "postVerdict", "aggregate"} <= set(report["gas"])
    assert {"claim", "claimMany"} & set(report["gas"])  # devices claim at the end, several rounds at once
    # Anyone re-checks the settled rounds from the chain alone, after the demo (fedoracle verify).
    assert report["verify"]["agrees"] is True, report["verify"]
    assert len(report["verify"]["rounds"]) == 2 and all("all agree" in r for r in report["verify"]["rounds"])
    assert "re-checked from the chain alone (fedoracle verify): every verdict and global model agrees" in proc.stdout

    leftovers = processes_with_marker(marker)
    assert leftovers == [], f"processes left behind by the demo: {leftovers}"

    # Quiet by default: nothing alarming on screen or in the roles' logs of a clean run.
    noise = noise_in("stdout", proc.stdout) + noise_in("stderr", proc.stderr)
    for log in sorted(run_dir.glob("*.log")):
        noise += noise_in(log.name, log.read_text(errors="replace"))
    assert noise == [], "a clean demo printed:\n" + "\n".join(noise)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_demo_stops_everything(tmp_path, sig):
    """Ctrl-C (or SIGTERM) mid-run: exit code 130 and no process of the run left alive."""
    marker = uuid.uuid4().hex
    env = dict(os.environ, FEDORACLE_TEST_RUN=marker)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedoracle.cli", "demo", "--devices", "4", "--rounds", "2", "--out", str(tmp_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Wait until the roles are up: the oracle's and the fleet's logs appear in the run folder.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list(tmp_path.glob("*/devices.log")):
        time.sleep(0.2)
    assert list(tmp_path.glob("*/devices.log")), "the demo never started its fleet"
    time.sleep(3)
    assert len(processes_with_marker(marker)) >= 4  # demo, anvil, broker or oracle, fleet
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 130, proc.stderr.read()[-2000:]
    time.sleep(0.5)
    assert processes_with_marker(marker) == []
