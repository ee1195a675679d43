"""The README's "Running the roles one by one" recipe, run as written (issue 15).

The bash block is read from README.md itself, so the test runs what a user reads. Only what a shared
test machine makes unavoidable is changed, and each change is checked to apply exactly where
expected (a README edit that moves them fails here first): the chain's and the broker's ports
(8545, 1883) become free ones, anvil is told its port, and ``./run`` is called by its absolute path
because the recipe runs in a fresh folder (so ``.fedoracle/`` is the test's own). The cheap test
parses every ``fedoracle`` command of the recipe with the real CLI (options, values, ranges); the
slow one runs the recipe and follows the task until the honest devices are paid.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import click
import psutil
import pytest

from demo.services import mosquitto_path
from fedoracle.cli import main
from tests.e2e.test_demo import noise_in, processes_with_marker

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Running the roles one by one"


def readme_recipe() -> str:
    """The first bash block of the README's roles section, verbatim."""
    text = (ROOT / "README.md").read_text()
    assert SECTION in text, "the README lost its roles section"
    section = text.split(SECTION, 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def literal(recipe: str, chain_port: int, broker_port: int) -> str:
    """The recipe with the unavoidable substitutions, each checked to apply exactly as expected."""
    subs = [
        ("./run anvil --silent", f"./run anvil --silent --port {chain_port}", 1),
        ("mosquitto -p 1883 ", f"mosquitto -p {broker_port} ", 1),
        ("127.0.0.1:8545", f"127.0.0.1:{chain_port}", 1),
        ("127.0.0.1:1883", f"127.0.0.1:{broker_port}", 1),
        ("./run ", f"{ROOT}/run ", recipe.count("./run ")),
    ]
    for old, new, count in subs:
        assert recipe.count(old) == count, f"the README's recipe has {recipe.count(old)} × {old!r}, expected {count}"
        recipe = recipe.replace(old, new)
    assert "8545" not in recipe.replace(str(chain_port), "") and "1883" not in recipe.replace(str(broker_port), "")
    return recipe


def commands(recipe: str) -> list[list[str]]:
    """The argument lists of every ``./run fedoracle ...`` in the recipe (continuations joined)."""
    lines = recipe.replace("\\\n", " ").splitlines()
    found = []
    for line in lines:
        line = line.split(" #", 1)[0].strip()
        for match in re.finditer(r"\./run fedoracle ([^)&]*)", line):
            found.append(shlex.split(match.group(1)))
    return found


def exports(recipe: str) -> dict[str, str]:
    """The variables the recipe exports (a command substitution stands for a plausible value)."""
    env = {}
    for line in recipe.splitlines():
        if line.startswith("export "):
            for word in shlex.split(line[len("export ") :].replace("$(", "'").replace(")", "'")):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def parse(args: list[str]) -> click.Context:
    """Parses ``fedoracle ARGS`` down to its command, as the CLI would, without running it."""
    ctx = main.make_context("fedoracle", list(args), auto_envvar_prefix="FEDORACLE")
    cmd: click.Command = main
    while isinstance(cmd, click.Group):
        rest = [*ctx.protected_args, *ctx.args]
        name, sub, rest = cmd.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        ctx = sub.make_context(name, rest, parent=ctx)
        cmd = sub
    return ctx


def test_every_command_of_the_recipe_parses(monkeypatch):
    literal(readme_recipe(), 18545, 11883)  # the substitutions the slow test makes still apply
    recipe = readme_recipe()
    env = exports(recipe)
    assert set(env) == {"FEDORACLE_RPC_URL", "FEDORACLE_BROKER_URL", "FEDORACLE_BLOB_STORE", "FEDORACLE_REGISTRY"}
    for k, v in env.items():
        monkeypatch.setenv(k, v if k != "FEDORACLE_REGISTRY" else "0x5FbDB2315678afecb367f032d93F642f64180aa3")
    found = commands(recipe)
    names = [" ".join(a[:2]) for a in found]
    assert names == ["deploy --key", "task publish", "relay run", "oracle run", "devices run", "status 1"], names
    for args in found:
        parse(args)  # raises click's usage error for an unknown option or a bad value
    oracle = [a for a in found if a[:2] == ["task", "publish"]][0]
    assert oracle[oracle.index("--oracle") + 1] == "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # dev:1, as run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_marked(marker: str, port: int) -> None:
    """Stops every process the recipe started: those carrying the marker, and the broker on ``port``."""
    procs = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            if f"FEDORACLE_TEST_RUN={marker}" in "\0".join(f"{k}={v}" for k, v in p.environ().items()):
                procs.append(p)
            elif p.info["name"] == "mosquitto" and str(port) in (p.info["cmdline"] or []):
                procs.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=20)
    for p in alive:
        p.kill()
    psutil.wait_procs(alive, timeout=10)


@pytest.mark.slow
@pytest.mark.skipif(mosquitto_path() is None, reason="the recipe starts Debian's mosquitto")
def test_the_recipe_as_written_pays_the_honest_devices(tmp_path):
    from eth_account import Account

    from devices.fleet import device_key
    from fedoracle.defaults import DEFAULTS
    from fedoracle.learning.partition import DeviceKind, fleet_kinds

    chain_port, broker_port = free_port(), free_port()
    script = literal(readme_recipe(), chain_port, broker_port)
    (tmp_path / "recipe.sh").write_text(script)
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDORACLE_") and k != "VIRTUAL_ENV"}
    env["FEDORACLE_TEST_RUN"] = marker
    logs = tmp_path / "recipe.log"
    started = time.monotonic()
    try:
        with open(logs, "wb") as out:
            done = subprocess.run(
                ["bash", "-e", "recipe.sh"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=300
            )
        assert done.returncode == 0, logs.read_text()[-3000:]
        status_env = dict(env, **exports(script))
        status_env["FEDORACLE_REGISTRY"] = (
            "0x5FbDB2315678afecb367f032d93F642f64180aa3"  # the first deployment on a fresh anvil
        )
        deadline = time.monotonic() + 300
        while True:
            got = subprocess.run(
                [sys.executable, "-m", "fedoracle.cli", "status", "1", "--json"],
                env=status_env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            status = json.loads(got.stdout) if got.returncode == 0 else {}
            settled = status.get("phase") == "finalized"
            pending = [s for s in status.get("submissions", []) if s.get("claimable_wei")]
            if settled and not pending:
                break
            assert time.monotonic() < deadline, (
                f"not finished in 5 minutes: {got.stdout[-2000:]} {logs.read_text()[-2000:]}"
            )
            time.sleep(2)
        elapsed = time.monotonic() - started
    finally:
        stop_marked(marker, broker_port)

    kinds = fleet_kinds(20, DEFAULTS.fleet_seed, malicious=DEFAULTS.malicious, unreliable=DEFAULTS.unreliable)
    address = {Account.from_key(device_key(DEFAULTS.key_seed, i)).address: kind for i, kind in enumerate(kinds)}
    paid = {s["device"] for s in status["submissions"] if s["claimed"]}
    honest = {a for a, k in address.items() if k == DeviceKind.HONEST}
    malicious = {a for a, k in address.items() if k == DeviceKind.MALICIOUS}
    assert honest <= paid, f"honest devices never paid: {sorted(honest - paid)}"
    assert not malicious & paid, f"malicious devices paid: {sorted(malicious & paid)}"
    assert len(status["rounds"]) == 3
    print(f"the README's recipe finished in {elapsed:.0f} s")
    assert processes_with_marker(marker) == []
    noise = noise_in("recipe", logs.read_text())
    assert noise == [], "\n".join(noise)
