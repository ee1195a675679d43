"""Record-level DP-SGD on a device: per-example clipping, Gaussian noise per step, Poisson sampling.

The mechanism of Abadi et al. (CCS 2016) as its privacy accounting assumes it: at every step each
of the device's D examples joins the batch independently with probability ``q`` (Poisson
subsampling, so batch sizes vary); each example's gradient is clipped to L2 norm ``C``; the sum
gets ``N(0, (σC)² I)`` noise and is divided by the *expected* batch size ``qD`` (not the drawn one,
which would leak the batch size); SGD with momentum applies it. One step is a Poisson-subsampled
Gaussian mechanism with noise multiplier σ, so a round of ``epochs · ⌈1/q⌉`` steps, and a task of
``rounds`` such rounds, is accounted exactly by dp-accounting
(:func:`fedoracle.learning.privacy.dpsgd_epsilon`). The unit of privacy is one record of the
device, added or removed.

Noise and batch membership are drawn from the operating system's entropy
(:func:`fedoracle.learning.privacy.noise_generator`), never from a seed: the accounting assumes the
attacker cannot predict which examples were sampled nor the noise.

Per-example gradients come from one batched backward pass: every weight of the small CNNs enters
its layer linearly, so an example's gradient is the product of the layer's input (image patches
for a convolution) and the gradient at the layer's output, which the summed loss's backward pass
gives for every example at once (:func:`_layerwise_clipped_sum`; about 2x the cost of a
non-private step for ``small_cnn``, against about 5x for ``tf.vectorized_map``, which stays the
reference and the fallback for other layers). tensorflow-privacy's Keras optimizers are not used: they
wrap the legacy optimizers and sample fixed-size shuffled batches, which do not match Poisson
accounting.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from numpy.typing import NDArray

from fedoracle.codec import ModelSpec
from fedoracle.learning.models import build_spec_model
from fedoracle.learning.privacy import noise_generator

_local = threading.local()


def steps_per_epoch(sampling_rate: float) -> int:
    """Steps in one epoch at Poisson rate ``q``: ``⌈1/q⌉`` (each example is seen once per epoch in expectation)."""
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"the sampling rate must be in (0, 1], got {sampling_rate}")
    return math.ceil(1 / sampling_rate - 1e-9)


class _DPTrainer:
    """A Keras model, SGD with momentum and the traced per-example-clipped step, reused in one thread."""

    def __init__(self, spec: ModelSpec, learning_rate: float, momentum: float, layerwise: bool = True) -> None:
        self.model = build_spec_model(spec)
        self.optimizer = tf.keras.optimizers.SGD(learning_rate, momentum=momentum)
        self.optimizer.build(self.model.trainable_variables)
        self.loss = tf.keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=tf.keras.losses.Reduction.NONE
        )
        self.layerwise = layerwise and _layerwise_supported(self.model)
        self.clipped_sum = tf.function(self._clipped_sum, reduce_retracing=True)
        self.apply = tf.function(self._apply, reduce_retracing=True)

    def _clipped_sum(self, x: tf.Tensor, y: tf.Tensor, clip: tf.Tensor) -> list[tf.Tensor]:
        """Σ_i clip(∇ℓ(x_i, y_i), C): each example's gradient scaled to L2 norm at most C, then summed."""
        if self.layerwise:
            return _layerwise_clipped_sum(self.model, self.loss, x, y, clip)
        return self._vectorized_clipped_sum(x, y, clip)

    def _vectorized_clipped_sum(self, x: tf.Tensor, y: tf.Tensor, clip: tf.Tensor) -> list[tf.Tensor]:
        """:meth:`_clipped_sum` by ``tf.vectorized_map`` over the examples (any model; the reference)."""
        variables = self.model.trainable_variables

        def one(example: tuple[tf.Tensor, tf.Tensor]) -> list[tf.Tensor]:
            xi, yi = example
            with tf.GradientTape() as tape:
                loss = self.loss(yi[None], self.model(xi[None], training=True))
            return tape.gradient(loss, variables)

        grads = tf.vectorized_map(one, (x, y))
        sq = tf.add_n([tf.reduce_sum(tf.reshape(tf.square(g), [tf.shape(g)[0], -1]), axis=1) for g in grads])
        factor = tf.minimum(1.0, clip / (tf.sqrt(sq) + 1e-12))
        return [tf.tensordot(factor, g, axes=1) for g in grads]

    def _apply(self, summed: list[tf.Tensor], noise: list[tf.Tensor], expected_batch: tf.Tensor) -> None:
        grads = [(s + n) / expected_batch for s, n in zip(summed, noise, strict=True)]
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))

    def reset(self, weights: Sequence[NDArray[Any]]) -> None:
        self.model.set_weights(list(weights))
        for variable in self.optimizer.variables:
            variable.assign(tf.zeros_like(variable))


def _trainer(spec: ModelSpec, learning_rate: float, momentum: float, layerwise: bool = True) -> _DPTrainer:
    cache: dict[tuple[str, float, float, bool], _DPTrainer] = _local.__dict__.setdefault("dp_trainers", {})
    key = (spec.spec_hash, float(learning_rate), float(momentum), layerwise)
    if key not in cache:
        cache[key] = _DPTrainer(spec, learning_rate, momentum, layerwise)
    return cache[key]


def clipped_gradient_sum(
    spec: ModelSpec,
    weights: Sequence[NDArray[Any]],
    x: NDArray[Any],
    y: NDArray[Any],
    clip: float,
    *,
    layerwise: bool = True,
) -> list[NDArray[Any]]:
    """The per-example-clipped gradient sum at ``weights`` (no noise): what one step adds noise to.

    Exposed so that the clipping bound can be tested directly: removing any one example changes
    this sum by at most ``clip`` in L2 norm, whatever the example. ``layerwise=False`` computes it
    by ``tf.vectorized_map`` (the reference the layer-wise computation is checked against).
    """
    trainer = _trainer(spec, 0.0, 0.0, layerwise)
    trainer.reset(weights)
    summed = trainer.clipped_sum(
        tf.convert_to_tensor(x), tf.convert_to_tensor(np.asarray(y, dtype=np.int32)), tf.constant(clip, tf.float32)
    )
    return [s.numpy() for s in summed]


def dp_sgd_train(
    spec: ModelSpec,
    global_weights: Sequence[NDArray[Any]],
    x: NDArray[Any],
    y: NDArray[Any],
    *,
    epochs: int,
    sampling_rate: float,
    learning_rate: float,
    momentum: float,
    clip: float,
    noise_multiplier: float,
    layerwise: bool = True,
) -> tuple[list[NDArray[Any]], int]:
    """Trains from ``global_weights`` with record-level DP-SGD and returns ``(weights, steps)``.

    Args:
        spec: the task's model spec.
        global_weights: the round's global model.
        x: the device's images.
        y: their labels.
        epochs: local epochs; the round takes ``epochs · steps_per_epoch(sampling_rate)`` steps.
        sampling_rate: Poisson rate q (expected batch qD).
        learning_rate: SGD step size.
        momentum: SGD momentum.
        clip: per-example L2 clip C.
        noise_multiplier: σ; the noise std per coordinate of the gradient sum is σC.
        layerwise: per-example gradients from one batched backward pass where the model allows
            (:func:`_layerwise_clipped_sum`), else, or when ``False``, by ``tf.vectorized_map``.

    Returns:
        The trained weights and the number of DP steps taken (what the accountant records).
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need matching, non-empty images and labels, got {len(x)} and {len(y)}")
    if not clip > 0 or not noise_multiplier >= 0:
        raise ValueError(f"need a clip > 0 and a noise multiplier >= 0, got {clip} and {noise_multiplier}")
    trainer = _trainer(spec, learning_rate, momentum, layerwise)
    trainer.reset(global_weights)
    rng = noise_generator()
    labels = np.asarray(y, dtype=np.int32)
    shapes = [tuple(v.shape) for v in trainer.model.trainable_variables]
    expected = tf.constant(sampling_rate * len(x), tf.float32)
    clip_t = tf.constant(clip, tf.float32)
    steps = epochs * steps_per_epoch(sampling_rate)
    for _ in range(steps):
        members = np.flatnonzero(rng.random(len(x)) < sampling_rate)
        if len(members):
            summed = trainer.clipped_sum(
                tf.convert_to_tensor(x[members]), tf.convert_to_tensor(labels[members]), clip_t
            )
        else:  # an empty Poisson batch still takes its (noise-only) step: skipping it would leak
            summed = [tf.zeros(s, tf.float32) for s in shapes]
        noise = [tf.convert_to_tensor(rng.normal(0.0, noise_multiplier * clip, s).astype(np.float32)) for s in shapes]
        trainer.apply(summed, noise, expected)
    return trainer.model.get_weights(), steps


_STATELESS = ("Rescaling", "MaxPooling2D", "Flatten", "Activation")


def _layerwise_supported(model: tf.keras.Model) -> bool:
    """Whether :func:`_layerwise_clipped_sum` computes this model's per-example gradients (else vectorized_map)."""
    for layer in model.layers:
        name = type(layer).__name__
        if name == "Conv2D":
            config = layer.get_config()
            if tuple(config["strides"]) != (1, 1) or tuple(config["dilation_rate"]) != (1, 1):
                return False
        elif name not in ("Dense", "GroupNormalization", *_STATELESS):
            return False
    return True


def _layerwise_clipped_sum(
    model: tf.keras.Model, loss_fn: Any, x: tf.Tensor, y: tf.Tensor, clip: tf.Tensor
) -> list[tf.Tensor]:
    """Σ_i clip(∇ℓ_i, C) from one batched backward pass, without materialising what it need not.

    Each weight enters a layer linearly (``z = a·W + b``; a convolution is that on image patches,
    a group norm ``z = x̂·γ + β``), so example i's gradient of W is ``a_iᵀ g_i`` with ``g_i = ∂ℓ_i/∂z_i``,
    and one backward pass of the summed loss gives every ``g_i`` (examples do not interact: no
    layer mixes them). Per-example norms: ``‖a_i‖²‖g_i‖²`` for a dense layer, the norm of the
    patch product for a convolution; the clipped sum weights each example's product by its factor.
    Equal to :meth:`_DPTrainer._vectorized_clipped_sum` (``tests/learning/test_dpsgd.py``).
    """
    taps: list[tuple[str, Any, tf.Tensor, tf.Tensor]] = []  # (kind, layer, its input or patches, z)
    with tf.GradientTape() as tape:
        h = tf.cast(x, tf.float32)
        for layer in model.layers:
            name = type(layer).__name__
            if name == "Conv2D":
                kh, kw = layer.kernel.shape[:2]
                padding = layer.get_config()["padding"].upper()
                z = tf.nn.convolution(h, layer.kernel, padding=padding) + layer.bias
                # The patches each kernel weight multiplies (only their values are needed: no gradient).
                patches = tf.image.extract_patches(tf.stop_gradient(h), [1, kh, kw, 1], [1] * 4, [1] * 4, padding)
                taps.append(("conv", layer, patches, z))
                h = layer.activation(z)
            elif name == "Dense":
                z = tf.matmul(h, layer.kernel) + layer.bias
                taps.append(("dense", layer, h, z))
                h = layer.activation(z)
            elif name == "GroupNormalization":
                groups, channels = layer.groups, h.shape[-1]
                shape = tf.shape(h)
                grouped = tf.reshape(h, tf.concat([shape[:-1], [groups, channels // groups]], axis=0))
                mean, variance = tf.nn.moments(grouped, axes=[1, 2, 4], keepdims=True)
                normed = tf.reshape((grouped - mean) * tf.math.rsqrt(variance + layer.epsilon), shape)
                z = normed * layer.gamma + layer.beta
                taps.append(("norm", layer, normed, z))
                h = z
            else:
                h = layer(h)
        loss = tf.reduce_sum(loss_fn(y, h))
    grads = tape.gradient(loss, [t[3] for t in taps])
    per_example: list[list[tf.Tensor]] = []  # per tap: (weight, bias) per-example gradients or factors
    sq = tf.zeros([tf.shape(x)[0]], tf.float32)
    for (kind, _, a, _), g in zip(taps, grads, strict=True):
        if kind == "dense":
            sq += tf.reduce_sum(tf.square(a), 1) * tf.reduce_sum(tf.square(g), 1) + tf.reduce_sum(tf.square(g), 1)
            per_example.append([])
        elif kind == "conv":
            w = tf.einsum("bhwk,bhwo->bko", a, g)
            b = tf.reduce_sum(g, [1, 2])
            sq += tf.reduce_sum(tf.square(w), [1, 2]) + tf.reduce_sum(tf.square(b), 1)
            per_example.append([w, b])
        else:
            w, b = tf.reduce_sum(a * g, [1, 2]), tf.reduce_sum(g, [1, 2])
            sq += tf.reduce_sum(tf.square(w), 1) + tf.reduce_sum(tf.square(b), 1)
            per_example.append([w, b])
    factor = tf.minimum(1.0, clip / (tf.sqrt(sq) + 1e-12))
    out: list[tf.Tensor] = []
    for (kind, layer, a, _), g, pe in zip(taps, grads, per_example, strict=True):
        if kind == "dense":
            out += [tf.matmul(a * factor[:, None], g, transpose_a=True), tf.linalg.matvec(g, factor, transpose_a=True)]
        elif kind == "conv":
            out += [tf.reshape(tf.tensordot(factor, pe[0], 1), layer.kernel.shape), tf.tensordot(factor, pe[1], 1)]
        else:
            out += [tf.tensordot(factor, pe[0], 1), tf.tensordot(factor, pe[1], 1)]
    return out
