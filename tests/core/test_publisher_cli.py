"""``fedoracle task cancel`` and ``fedoracle task refund`` against anvil.

What they do on-chain, and one line (exit 1, the contract's custom error named) when the contract
refuses.
"""

from __future__ import annotations

import json

from click.testing import CliRunner

from fedoracle.chain import dev_account
from fedoracle.cli import main
from tests.conftest import run
from tests.core.test_chain import params

PUBLISHER, STRANGER = 0, 9


def cli(anvil, registry, key: int, *args: str):
    return CliRunner().invoke(
        main, ["task", *args, "--rpc-url", anvil.rpc_url, "--registry", registry.address, "--key", f"dev:{key}"]
    )


def test_the_publisher_withdraws_an_untouched_task_and_gets_the_escrow_back(anvil, registry):
    task_id, _ = run(registry.publish(params(), 10**17))
    before = run(registry.chain.balance(dev_account(PUBLISHER).address))

    refused = cli(anvil, registry, STRANGER, "cancel", str(task_id))  # not the publisher's to cancel
    assert refused.exit_code == 1
    assert [line for line in refused.output.splitlines() if line] == [refused.output.strip()]
    assert "FLTaskCannotCancel" in refused.output and "Traceback" not in refused.output

    cancelled = cli(anvil, registry, PUBLISHER, "cancel", str(task_id))
    assert cancelled.exit_code == 0, cancelled.output
    doc = json.loads(cancelled.output)
    assert doc["cancelled"] and doc["refundable_wei"] == 10**17

    refunded = cli(anvil, registry, PUBLISHER, "refund", str(task_id))
    assert refunded.exit_code == 0, refunded.output
    assert json.loads(refunded.output)["refunded_wei"] == 10**17
    assert run(registry.refundable(task_id)) == 0
    after = run(registry.chain.balance(dev_account(PUBLISHER).address))
    assert after > before + 10**17 - 10**16  # the escrow came back, less gas

    again = cli(anvil, registry, PUBLISHER, "refund", str(task_id))
    assert again.exit_code == 1 and "FLTaskNothingToRefund" in again.output


def test_a_nonsense_task_id_is_refused_before_anything_is_sent(anvil, registry):
    result = cli(anvil, registry, PUBLISHER, "cancel", "0")
    assert result.exit_code == 2 and "Invalid value for 'TASK_ID'" in result.output
