"""Bad values on the command line: refused before anything starts, one line naming the option.

Every value here used to get past the parser (a hang until the demo's timeout, a published task
whose devices then failed, a screen of web3 ABI matching, a traceback). Now click checks each
against the range the shared option declares (``fedoracle.options``): exit code 2, one ``Error:``
line naming the option, and since nothing ran, nothing was published.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from fedoracle.cli import main

PUBLISH = [
    "task",
    "publish",
    "--registry",
    "0x" + "11" * 20,
    "--key",
    "dev:0",
    "--oracle",
    "0x" + "22" * 20,
    "--rpc-url",
    "http://127.0.0.1:1",
]
DEVICES = ["devices", "run", "--registry", "0x" + "11" * 20, "--rpc-url", "http://127.0.0.1:1"]
ORACLE = ["oracle", "run", "--registry", "0x" + "11" * 20, "--key", "dev:1", "--rpc-url", "http://127.0.0.1:1"]

BAD = [
    (["demo"], "--devices", "0"),
    (["demo"], "--devices", "-5"),
    (["demo"], "--epsilon", "0"),
    (["demo"], "--delta", "5"),
    (["demo"], "--delta", "0"),
    (["demo"], "--flip-rate", "1.5"),
    (["demo"], "--rounds", "0"),
    (["demo"], "--threshold", "1.5"),
    (["demo"], "--clip", "-1"),
    (["demo"], "--malicious", "-0.1"),
    (["demo"], "--emd", "3"),
    (["demo"], "--epochs", "0"),
    (["demo"], "--lr", "0"),
    (["demo"], "--batch-size", "0"),
    (["demo"], "--timeout", "0"),
    (["demo"], "--threshold-margin", "2"),
    (["demo"], "--dataset", "imagenet"),
    (PUBLISH, "--clip", "-1"),
    (PUBLISH, "--reward", "-1"),
    (PUBLISH, "--epsilon", "0"),
    (PUBLISH, "--delta", "5"),
    (PUBLISH, "--rounds", "0"),
    (PUBLISH, "--round-duration", "0"),
    (PUBLISH, "--max-submissions", "-1"),
    (PUBLISH, "--threshold", "-0.5"),
    (DEVICES, "--count", "0"),
    (DEVICES, "--first-index", "-1"),
    (DEVICES, "--lr", "-1"),
    (DEVICES, "--samples-per-device", "0"),
    (DEVICES, "--train-workers", "0"),
    (DEVICES, "--seed", "-1"),
    (ORACLE, "--workers", "0"),
    (ORACLE, "--threshold-margin", "2"),
    (PUBLISH, "--aggregation", "mode"),
    (PUBLISH, "--trim-fraction", "0.5"),
    (PUBLISH, "--loss-margin-bp", "10001"),
    (PUBLISH, "--claim-window", "0"),
    (["task", "cancel", "--registry", "0x" + "11" * 20, "--key", "dev:0"], "", "0"),
]


@pytest.mark.parametrize(("command", "option", "value"), BAD, ids=[f"{c[0]}{o}={v}" for c, o, v in BAD])
def test_a_bad_value_exits_2_with_one_line_naming_the_option(command, option, value):
    result = CliRunner().invoke(main, [*command, *([option] if option else []), value])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"'{option or 'TASK_ID'}'" in errors[0], result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("dev:abc", "dev-chain account number"),
        ("file:/nonexist", "cannot read"),
        ("env:FEDORACLE_NO_SUCH_VAR", "is not set"),
        ("0x12", "not a usable"),
    ],
)
def test_a_bad_key_is_one_line(key, says):
    result = CliRunner().invoke(main, ["deploy", "--key", key, "--rpc-url", "http://127.0.0.1:1"])
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line] == [result.output.strip()]
    assert result.output.startswith("Error:") and says in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command", [["demo"], DEVICES], ids=["demo", "devices"])
def test_record_level_dp_with_another_optimizer_is_one_line_before_anything_starts(command):
    """The default mode (record-level DP-SGD) cannot train with Adam: said at once, not at the first round."""
    result = CliRunner().invoke(main, [*command, "--optimizer", "adam"])
    assert result.exit_code == 1, result.output
    assert [line for line in result.output.splitlines() if line] == [result.output.strip()]
    assert "--dp-scaling record trains with SGD" in result.output and "Traceback" not in result.output


def test_the_paper_modes_and_non_dp_still_take_adam():
    from fedoracle.defaults import TrainingSettings

    for scaling in ("sample", "update"):
        TrainingSettings(optimizer="adam", dp_scaling=scaling).check_privacy_mode()
    TrainingSettings(optimizer="adam").check_privacy_mode(dp=False)
