"""The task's declared privacy mode binds its devices: they train in it or not at all."""

from __future__ import annotations

import pytest

from devices.client import TrainingConfig
from devices.training import LocalTrainer
from fedoracle.defaults import DP_SCALINGS, privacy_mode_code
from fedoracle.errors import PrivacyModeMismatch
from fedoracle.units import encode_dp


def _task(mode: str) -> dict[str, int]:
    milli, e18, micro = encode_dp(8.0, 1e-5, 1.0)
    mode_code = privacy_mode_code(mode)
    return {"epsilonMilli": milli, "deltaE18": e18, "clipMicro": micro, "maxRounds": 3, "privacyMode": mode_code}


@pytest.mark.parametrize("declared", DP_SCALINGS)
def test_a_device_never_trains_in_another_mode_than_the_task_declares(mnist, spec, initial, declared):
    """A device set up for the paper's ÷D noise meets a task that promises record-level DP: it refuses.

    Training in a weaker mode than the one published would make the task's printed guarantee false
    for that device's data; the device says why and releases nothing.
    """
    x, y = mnist.x_train[:128], mnist.y_train[:128]
    for mode in DP_SCALINGS:
        config = TrainingConfig(epochs=1, batch_size=64, optimizer="sgd", learning_rate=0.1, dp_scaling=mode)
        trainer = LocalTrainer(x, y, config, seed=0)
        if mode != declared:
            with pytest.raises(PrivacyModeMismatch, match=f"declares privacy mode '{declared}'"):
                trainer(spec, initial, _task(declared))
            assert trainer.rounds == 0 and trainer.epsilon_spent is None  # nothing trained, nothing spent
    update, n, _ = LocalTrainer(
        x, y, TrainingConfig(epochs=1, batch_size=64, optimizer="sgd", learning_rate=0.1, dp_scaling=declared), seed=0
    )(spec, initial, _task(declared))
    assert n == 128 and len(update) == len(initial)
