"""Fixtures of the learning tests: the MNIST small_cnn spec and its seed-0 initial weights, once per module."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def spec(mnist):
    from fedoracle.learning.models import model_spec

    return model_spec("small_cnn", mnist.input_shape, mnist.num_classes)


@pytest.fixture(scope="module")
def initial(spec):
    from fedoracle.learning.models import initial_weights

    return initial_weights(spec, 0)
