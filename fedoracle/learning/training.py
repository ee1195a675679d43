"""Local training on a device: minibatch SGD or Adam from the round's global weights (the paper's D-SGD step).

Building and tracing a Keras model costs far more than training a small shard on it, so each
thread keeps one compiled trainer per (spec, optimizer, learning rate) and reuses it: every call
resets the weights to the global model and zeroes the optimizer's state (the state a fresh
optimizer starts from). Trainers are per thread (``threading.local``), so :func:`local_train` may
be called from several threads at once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from numpy.typing import NDArray

from fedoracle.codec import ModelSpec
from fedoracle.learning.models import build_spec_model

OPTIMIZERS = ("adam", "sgd")

_local = threading.local()


class _Trainer:
    """A Keras model, an optimizer and a traced train step, reused across calls in one thread."""

    def __init__(self, spec: ModelSpec, optimizer: str, learning_rate: float) -> None:
        self.model = build_spec_model(spec)
        if optimizer == "adam":
            self.optimizer = tf.keras.optimizers.Adam(learning_rate)
        elif optimizer == "sgd":
            self.optimizer = tf.keras.optimizers.SGD(learning_rate)
        else:
            raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        self.optimizer.build(self.model.trainable_variables)
        self.loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.step = tf.function(self._step, reduce_retracing=True)

    def _step(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = self.loss(y, self.model(x, training=True))
        grads = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))
        return loss

    def reset(self, weights: Sequence[NDArray[Any]]) -> None:
        self.model.set_weights(list(weights))
        for variable in self.optimizer.variables:
            variable.assign(tf.zeros_like(variable))


def _trainer(spec: ModelSpec, optimizer: str, learning_rate: float) -> _Trainer:
    cache: dict[tuple[str, str, float], _Trainer] = _local.__dict__.setdefault("trainers", {})
    key = (spec.spec_hash, optimizer, float(learning_rate))
    if key not in cache:
        cache[key] = _Trainer(spec, optimizer, learning_rate)
    return cache[key]


def local_train(
    spec: ModelSpec,
    global_weights: Sequence[NDArray[Any]],
    x: NDArray[Any],
    y: NDArray[Any],
    *,
    epochs: int = 1,
    batch_size: int = 128,
    learning_rate: float = 1e-4,
    optimizer: str = "adam",
    seed: int = 0,
) -> list[NDArray[Any]]:
    """Trains from ``global_weights`` on one device's data and returns the trained weights.

    Defaults follow the paper (batch 128, learning rate 1e-4). Each epoch visits the shard once in
    an order drawn from ``seed`` (the last batch may be smaller). With no dropout in the model
    (``small_cnn``) the result is a deterministic function of the inputs and ``seed``; dropout
    masks (``alexnet``) come from TensorFlow's stateful random ops and are not reproducible.

    Args:
        spec: the task's model spec.
        global_weights: the round's global model.
        x: images, ``uint8`` or float in [0, 255].
        y: integer labels.
        epochs: passes over the shard.
        batch_size: minibatch size.
        learning_rate: step size.
        optimizer: ``"adam"`` or ``"sgd"``.
        seed: fixes the visiting order.

    Returns:
        The weights after training, in spec order.
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need matching, non-empty images and labels, got {len(x)} and {len(y)}")
    trainer = _trainer(spec, optimizer, learning_rate)
    trainer.reset(global_weights)
    rng = np.random.default_rng(seed)
    labels = np.asarray(y, dtype=np.int32)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            trainer.step(tf.convert_to_tensor(x[batch]), tf.convert_to_tensor(labels[batch]))
    return trainer.model.get_weights()
