"""TFF evaluation of a model on a test set: equal to Keras ``model.evaluate``, batched, thread-safe."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf

from fedoracle.learning.evaluation import EvalResult, Evaluator
from fedoracle.learning.models import build_spec_model, initial_weights, model_spec
from fedoracle.learning.training import local_train


def _keras_evaluate(spec, weights, x, y, batch_size):
    model = build_spec_model(spec)
    model.set_weights(weights)
    model.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model.evaluate(x, y, batch_size=batch_size, verbose=0)


@pytest.mark.parametrize("batch_size", [1000, 333])
def test_tff_equals_keras_on_mnist(mnist, batch_size: int) -> None:
    """A trained small CNN scores the same in TFF and Keras on the full MNIST test set (1e-6)."""
    spec = model_spec("small_cnn", mnist.input_shape, 10)
    weights = local_train(
        spec, initial_weights(spec, 0), mnist.x_train[:3000], mnist.y_train[:3000], learning_rate=1e-3
    )
    result = Evaluator(spec, mnist.x_test, mnist.y_test, batch_size=batch_size).evaluate(weights)
    loss, accuracy = _keras_evaluate(spec, weights, mnist.x_test, mnist.y_test, batch_size)
    assert result.num_examples == 10_000
    assert result.accuracy == pytest.approx(accuracy, abs=1e-6)
    assert result.loss == pytest.approx(loss, abs=1e-6)
    assert 0.5 < result.accuracy < 1.0


def test_tff_equals_keras_for_alexnet_on_color_images() -> None:
    """The AlexNet-style model on 32x32x3 inputs (with a partial last batch) agrees with Keras too."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(250, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=250).astype(np.int32)
    spec = model_spec("alexnet", (32, 32, 3), 10)
    weights = initial_weights(spec, 4)
    result = Evaluator(spec, x, y, batch_size=100).evaluate(weights)
    loss, accuracy = _keras_evaluate(spec, weights, x, y, 100)
    assert result.accuracy == pytest.approx(accuracy, abs=1e-6)
    assert result.loss == pytest.approx(loss, abs=1e-6)


def test_evaluate_from_a_thread_pool(mnist) -> None:
    """Concurrent calls from worker threads give the same results as calls from the main thread."""
    spec = model_spec("small_cnn", mnist.input_shape, 10)
    models = [initial_weights(spec, seed) for seed in range(3)]
    evaluator = Evaluator(spec, mnist.x_test[:2000], mnist.y_test[:2000])
    expected = [evaluator.evaluate(w) for w in models]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(evaluator.evaluate, models * 3))
    assert got == expected * 3


def test_evaluator_checks_shapes(mnist) -> None:
    """Test images of the wrong shape, or weights of another spec, are refused."""
    spec = model_spec("small_cnn", mnist.input_shape, 10)
    with pytest.raises(ValueError, match="shape"):
        Evaluator(spec, np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4, np.int32))
    evaluator = Evaluator(spec, mnist.x_test[:10], mnist.y_test[:10])
    with pytest.raises(ValueError, match="spec"):
        evaluator.evaluate(initial_weights(model_spec("small_cnn", (32, 32, 3), 10), 0))


def test_accuracy_in_basis_points_rounds_down() -> None:
    """The on-chain unit never overstates the accuracy."""
    assert EvalResult(accuracy=0.98765, loss=0.1, num_examples=100_000).accuracy_bp == 9876
    assert EvalResult(accuracy=0.95, loss=0.1, num_examples=20).accuracy_bp == 9500


def test_a_chunk_of_candidates_in_one_call_equals_each_scored_alone(mnist) -> None:
    """``evaluate_many`` (one TFF call for the chunk) gives each candidate's ``evaluate`` result (1e-6)."""
    spec = model_spec("small_cnn", mnist.input_shape, 10)
    trained = local_train(
        spec, initial_weights(spec, 0), mnist.x_train[:1000], mnist.y_train[:1000], learning_rate=1e-3
    )
    rng = np.random.default_rng(5)
    candidates = [trained, initial_weights(spec, 1)] + [
        [(w + rng.normal(0, 0.02, w.shape)).astype(w.dtype) for w in trained] for _ in range(3)
    ]
    evaluator = Evaluator(spec, mnist.x_test[:1500], mnist.y_test[:1500], batch_size=400)  # a partial last batch
    alone = [evaluator.evaluate(c) for c in candidates]
    together = evaluator.evaluate_many(candidates)
    assert len(together) == len(candidates) and len({r.accuracy for r in alone}) > 1
    for a, b in zip(alone, together, strict=True):
        assert b.num_examples == a.num_examples == 1500
        assert b.accuracy == pytest.approx(a.accuracy, abs=1e-6)
        assert b.loss == pytest.approx(a.loss, abs=1e-6)
    (one,) = evaluator.evaluate_many(candidates[1:2])  # a chunk of one
    assert one.accuracy == pytest.approx(alone[1].accuracy, abs=1e-6)
    assert one.loss == pytest.approx(alone[1].loss, abs=1e-6)
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluator.evaluate_many([])
    with pytest.raises(ValueError, match="model spec"):
        evaluator.evaluate_many([trained[:-1]])
