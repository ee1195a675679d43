"""Architectures, specs, deterministic initial weights, and the graph-mode forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from fedoracle.learning.models import ARCHITECTURES, build_model, graph_forward, initial_weights, model_spec

SHAPES = [(28, 28, 1), (32, 32, 3)]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("input_shape", SHAPES)
def test_spec_describes_the_model(architecture: str, input_shape: tuple[int, ...]) -> None:
    """The spec lists the Keras model's weights in order, and logits have one entry per class."""
    spec = model_spec(architecture, input_shape, 10)
    model = build_model(architecture, input_shape, 10)
    assert [t.shape for t in spec.tensors] == [tuple(w.shape) for w in model.get_weights()]
    assert all(t.dtype == "float32" for t in spec.tensors)
    assert model(np.zeros((2, *input_shape), np.uint8)).shape == (2, 10)
    assert spec.spec_hash == model_spec(architecture, input_shape, 10).spec_hash


def test_alexnet_has_dropout_half_and_five_convolutions() -> None:
    """The AlexNet-style model has five convolutions and two 0.5 dropouts."""
    layers = build_model("alexnet", (32, 32, 3), 10).layers
    assert sum(isinstance(x, tf.keras.layers.Conv2D) for x in layers) == 5
    assert [x.rate for x in layers if isinstance(x, tf.keras.layers.Dropout)] == [0.5, 0.5]


def test_specs_differ_across_architectures_and_shapes() -> None:
    """Each (architecture, input shape) has its own spec hash."""
    hashes = {model_spec(a, s, 10).spec_hash for a in ARCHITECTURES for s in SHAPES}
    assert len(hashes) == len(ARCHITECTURES) * len(SHAPES)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_initial_weights_are_deterministic(architecture: str) -> None:
    """The same seed gives the same weights, another seed others; biases start at zero."""
    spec = model_spec(architecture, (28, 28, 1), 10)
    first, again, other = initial_weights(spec, 5), initial_weights(spec, 5), initial_weights(spec, 6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])
    assert [w.shape for w in first] == [t.shape for t in spec.tensors]
    assert all(w.dtype == np.float32 for w in first)
    assert not np.any(first[1]) and np.abs(first[0]).max() <= np.sqrt(
        6 / (9 * 1 + 9 * 48 if architecture == "alexnet" else 9 + 9 * 16)
    )


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("input_shape", SHAPES)
def test_graph_forward_matches_keras(architecture: str, input_shape: tuple[int, ...]) -> None:
    """The plain-TF forward pass gives Keras' inference logits."""
    spec = model_spec(architecture, input_shape, 10)
    weights = initial_weights(spec, 1)
    model = build_model(architecture, input_shape, 10)
    model.set_weights(weights)
    images = np.random.default_rng(0).integers(0, 256, size=(7, *input_shape), dtype=np.uint8)
    expected = model(images, training=False).numpy()
    got = graph_forward(spec)([tf.constant(w) for w in weights], tf.constant(images)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_unknown_architecture() -> None:
    """Unknown architectures are refused with the list of known ones."""
    with pytest.raises(ValueError, match="small_cnn"):
        build_model("resnet", (28, 28, 1), 10)
