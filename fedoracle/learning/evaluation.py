"""Scoring one model on the hidden test set as a TensorFlow Federated computation (accuracy and loss).

An :class:`Evaluator` builds one ``tff.tensorflow.computation`` per (spec, test set): its only
argument is the model's weights; the test set is embedded in the computation as constants and
read in batches by a ``tf.data`` reduction, so a call ships only the weights to TFF's worker. The
forward pass is :func:`~fedoracle.learning.models.graph_forward` (plain TF ops, no Keras object in
the graph), and the loss is Keras' sparse categorical cross-entropy on logits, so the result
agrees with Keras ``model.evaluate`` on the same data.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from numpy.typing import NDArray

from fedoracle.codec import ModelSpec
from fedoracle.learning.models import graph_forward
from fedoracle.learning.runtime import tff_runtime


@dataclass(frozen=True)
class EvalResult:
    """The score of one model on a test set.

    Attributes:
        accuracy: fraction of test examples whose arg-max logit is the label.
        loss: mean sparse categorical cross-entropy over the test examples.
        num_examples: number of test examples.
    """

    accuracy: float
    loss: float
    num_examples: int

    @property
    def accuracy_bp(self) -> int:
        """Accuracy in basis points (0..10000, rounded down), the on-chain unit."""
        from fedoracle.units import floor_bp

        return floor_bp(self.accuracy)


class Evaluator:
    """Evaluates weights of one model spec on one fixed test set through TFF.

    The computation is built once, in the constructor (about a second); each
    :meth:`evaluate` then costs one forward pass over the test set plus shipping the weights.

    Thread safety: :meth:`evaluate` may be called from several threads at once. Each call installs
    the process's shared TFF context in its thread (:func:`~fedoracle.learning.runtime.tff_runtime`),
    TFF's synchronous context submits it to its event-loop thread, and the calls run concurrently
    in the one worker process; the evaluator itself holds no mutable state.
    """

    def __init__(self, spec: ModelSpec, x_test: NDArray[Any], y_test: NDArray[Any], *, batch_size: int = 1000) -> None:
        """Builds the evaluation computation.

        Args:
            spec: the task's model spec.
            x_test: test images (``uint8`` or float in [0, 255]), shape ``(N, *spec.input_shape)``.
            y_test: integer labels, shape ``(N,)``.
            batch_size: examples per forward pass inside the computation.

        Raises:
            ValueError: when the test set does not fit the spec.
        """
        if len(x_test) != len(y_test) or len(x_test) == 0:
            raise ValueError(f"need matching, non-empty test images and labels, got {len(x_test)} and {len(y_test)}")
        if tuple(x_test.shape[1:]) != tuple(spec.input_shape):
            raise ValueError(f"test images have shape {x_test.shape[1:]}, spec input is {spec.input_shape}")
        self.spec = spec
        self.num_examples = len(x_test)
        tff = tff_runtime()
        forward = graph_forward(spec)
        images = np.ascontiguousarray(x_test)
        labels = np.asarray(y_test, dtype=np.int32)
        weight_type = tff.StructType([(None, tff.TensorType(np.dtype(t.dtype), t.shape)) for t in spec.tensors])

        def evaluate(weights: Any) -> Any:
            weights = list(weights)
            data = tf.data.Dataset.from_tensor_slices((tf.constant(images), tf.constant(labels))).batch(batch_size)

            def add_batch(totals: Any, batch: Any) -> Any:
                x, y = batch
                logits = forward(weights, x)
                losses = tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
                hits = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y)
                return (
                    totals[0] + tf.reduce_sum(tf.cast(losses, tf.float64)),
                    totals[1] + tf.reduce_sum(tf.cast(hits, tf.int64)),
                )

            return data.reduce((tf.constant(0.0, tf.float64), tf.constant(0, tf.int64)), add_batch)

        def evaluate_stacked(stacked: Any) -> Any:
            stacked = list(stacked)
            data = tf.data.Dataset.from_tensor_slices((tf.constant(images), tf.constant(labels))).batch(batch_size)

            def add_batch(totals: Any, batch: Any) -> Any:
                x, y = batch

                def one(weights: Any) -> Any:
                    logits = forward(list(weights), x)
                    losses = tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
                    hits = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y)
                    return tf.reduce_sum(tf.cast(losses, tf.float64)), tf.reduce_sum(tf.cast(hits, tf.int64))

                loss, hit = tf.map_fn(one, stacked, fn_output_signature=(tf.float64, tf.int64))
                return totals[0] + loss, totals[1] + hit

            count = tf.shape(stacked[0])[0]
            zeros = (tf.zeros([count], tf.float64), tf.zeros([count], tf.int64))
            return data.reduce(zeros, add_batch)

        # TFF's decorator is untyped: called rather than applied with @; it builds a callable computation.
        self._computation: Callable[..., Any] = tff.tensorflow.computation(weight_type)(evaluate)
        stacked_type = tff.StructType(
            [(None, tff.TensorType(np.dtype(t.dtype), (None, *t.shape))) for t in spec.tensors]
        )
        self._build_stacked: Callable[[], Callable[..., Any]] = lambda: tff.tensorflow.computation(stacked_type)(
            evaluate_stacked
        )
        self._stacked: Callable[..., Any] | None = None
        self._build_lock = threading.Lock()

    def evaluate(self, weights: Sequence[NDArray[Any]]) -> EvalResult:
        """Scores ``weights`` (in spec order) on the test set.

        Raises:
            ValueError: when the weights do not match the spec's tensor shapes.
        """
        if [tuple(w.shape) for w in weights] != [t.shape for t in self.spec.tensors]:
            raise ValueError("weights do not match the evaluator's model spec")
        arrays = [np.asarray(w, dtype=np.dtype(t.dtype)) for w, t in zip(weights, self.spec.tensors, strict=True)]
        tff_runtime()
        loss_sum, hits = self._computation(arrays)
        return EvalResult(
            accuracy=float(hits) / self.num_examples,
            loss=float(loss_sum) / self.num_examples,
            num_examples=self.num_examples,
        )

    def evaluate_many(self, candidates: Sequence[Sequence[NDArray[Any]]]) -> list[EvalResult]:
        """Scores several models (each in spec order) in one TFF call: one pass over the test set for all of them.

        Equal to :meth:`evaluate` of each candidate (the same forward pass, per candidate, on each
        batch of test data; ``tests/learning/test_evaluation.py``); the batched computation is
        built on first use (about a second) and then reused.

        Raises:
            ValueError: when a candidate's weights do not match the spec's tensor shapes, or there
                are no candidates.
        """
        if not candidates:
            raise ValueError("nothing to evaluate")
        shapes = [t.shape for t in self.spec.tensors]
        if any([tuple(w.shape) for w in c] != shapes for c in candidates):
            raise ValueError("weights do not match the evaluator's model spec")
        stacked = [
            np.stack([np.asarray(c[i], dtype=np.dtype(t.dtype)) for c in candidates])
            for i, t in enumerate(self.spec.tensors)
        ]
        tff_runtime()
        with self._build_lock:
            if self._stacked is None:
                self._stacked = self._build_stacked()
            computation = self._stacked
        loss_sums, hits = computation(stacked)
        return [
            EvalResult(
                accuracy=float(h) / self.num_examples,
                loss=float(loss) / self.num_examples,
                num_examples=self.num_examples,
            )
            for loss, h in zip(np.asarray(loss_sums), np.asarray(hits), strict=True)
        ]
