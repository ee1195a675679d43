"""Model architectures (a small fast CNN and the paper's AlexNet-style CNN), their specs and initial weights.

``small_cnn_tanh`` and ``small_cnn_gn`` are the small CNN with tanh activations, and with tanh and
group normalisation after each convolution: what DP-SGD is reported to train better (Papernot et
al. 2021, "Tempered sigmoid activations"; De et al. 2022); measured against ``small_cnn`` in
``bench/results/privacy.md``. Each is its own architecture id, so its spec hash differs from the
small CNN's even where the tensor shapes agree (tanh changes no shape).

Every model maps ``uint8`` or float images in [0, 255] to class logits (no softmax): a
``Rescaling(1/255)`` layer comes first, so data stays ``uint8`` up to the model. All weights are
trainable and no layer keeps state, so ``model.get_weights()`` is the whole model and its order
is the order of the spec's tensors.

Keras models must be built eagerly: building one inside a graph (as TFF computations do) swaps
Keras' base classes for every model in the process. :func:`graph_forward` therefore evaluates a
model inside a graph from its layer configurations with plain TensorFlow ops, creating no Keras
object there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import tensorflow as tf
from numpy.typing import NDArray

from fedoracle.codec import DEFAULT_MAX_BYTES, ModelSpec

ARCHITECTURES = ("small_cnn", "small_cnn_tanh", "small_cnn_gn", "alexnet")

_L = tf.keras.layers


def _small_cnn(num_classes: int, activation: str = "relu", groups: int = 0) -> list[tf.keras.layers.Layer]:
    def conv(filters: int) -> list[tf.keras.layers.Layer]:
        if not groups:
            return [_L.Conv2D(filters, 3, activation=activation)]
        return [_L.Conv2D(filters, 3), _L.GroupNormalization(groups), _L.Activation(activation)]

    return [
        *conv(16),
        _L.MaxPooling2D(),
        *conv(32),
        _L.MaxPooling2D(),
        _L.Flatten(),
        _L.Dense(64, activation=activation),
        _L.Dense(num_classes),
    ]


def _alexnet(num_classes: int) -> list[tf.keras.layers.Layer]:
    # AlexNet's layout (five 3x3 convolutions, three max-pools, two dropout-regularised dense
    # layers) with the per-GPU widths of the original (48, 128, 192, 192, 128) and 512-unit dense
    # layers, sized for 28x28 and 32x32 inputs.
    return [
        _L.Conv2D(48, 3, padding="same", activation="relu"),
        _L.MaxPooling2D(),
        _L.Conv2D(128, 3, padding="same", activation="relu"),
        _L.MaxPooling2D(),
        _L.Conv2D(192, 3, padding="same", activation="relu"),
        _L.Conv2D(192, 3, padding="same", activation="relu"),
        _L.Conv2D(128, 3, padding="same", activation="relu"),
        _L.MaxPooling2D(),
        _L.Flatten(),
        _L.Dropout(0.5),
        _L.Dense(512, activation="relu"),
        _L.Dropout(0.5),
        _L.Dense(512, activation="relu"),
        _L.Dense(num_classes),
    ]


_BUILDERS: dict[str, Callable[[int], list[tf.keras.layers.Layer]]] = {
    "small_cnn": _small_cnn,
    "small_cnn_tanh": lambda n: _small_cnn(n, "tanh"),
    "small_cnn_gn": lambda n: _small_cnn(n, "tanh", groups=4),
    "alexnet": _alexnet,
}


def build_model(architecture: str, input_shape: Sequence[int], num_classes: int) -> tf.keras.Sequential:
    """Builds an uncompiled Keras model (eagerly; see the module docstring) that outputs logits.

    Raises:
        ValueError: for an unknown architecture.
    """
    if architecture not in _BUILDERS:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {', '.join(ARCHITECTURES)}")
    return tf.keras.Sequential(
        [_L.Input(tuple(input_shape)), _L.Rescaling(1.0 / 255.0), *_BUILDERS[architecture](num_classes)],
        name=architecture,
    )


def build_spec_model(spec: ModelSpec) -> tf.keras.Sequential:
    """Builds the Keras model a spec describes.

    Raises:
        ValueError: when the built model's tensors differ from the spec's.
    """
    model = build_model(spec.architecture, spec.input_shape, spec.num_classes)
    shapes = [tuple(w.shape) for w in model.weights]
    if shapes != [t.shape for t in spec.tensors]:
        raise ValueError(f"spec {spec.spec_hash} does not describe a {spec.architecture} model")
    return model


@lru_cache(maxsize=32)
def _cached_spec(architecture: str, input_shape: tuple[int, ...], num_classes: int, max_bytes: int) -> ModelSpec:
    model = build_model(architecture, input_shape, num_classes)
    return ModelSpec.from_weights(architecture, input_shape, num_classes, model.get_weights(), max_bytes=max_bytes)


def model_spec(
    architecture: str, input_shape: Sequence[int], num_classes: int, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> ModelSpec:
    """The :class:`~fedoracle.codec.ModelSpec` of an architecture for an input shape and class count."""
    return _cached_spec(architecture, tuple(int(d) for d in input_shape), int(num_classes), int(max_bytes))


def initial_weights(spec: ModelSpec, seed: int) -> list[NDArray[Any]]:
    """Deterministic initial weights: Glorot-uniform kernels and zero biases (Keras' defaults).

    Drawn with numpy from ``seed`` alone, so they are the same on every machine and do not touch
    TensorFlow's global random state.
    """
    model = build_spec_model(spec)
    rng = np.random.default_rng(seed)
    weights = []
    for variable in model.weights:
        shape = tuple(variable.shape)
        if variable.name.endswith("kernel:0"):
            receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            weights.append(rng.uniform(-limit, limit, size=shape).astype(np.float32))
        elif variable.name.endswith("gamma:0"):  # a normalisation's scale starts at 1
            weights.append(np.ones(shape, dtype=np.float32))
        else:
            weights.append(np.zeros(shape, dtype=np.float32))
    return weights


def graph_forward(spec: ModelSpec) -> Callable[[Sequence[tf.Tensor], tf.Tensor], tf.Tensor]:
    """A pure function ``(weights, images) -> logits`` in plain TensorFlow ops, for use inside graphs.

    It replays the layers of the spec's Keras model in inference mode (dropout off) with the ops
    Keras itself uses, so it agrees with ``model(x, training=False)``.

    Raises:
        ValueError: when the model holds a layer this interpreter does not know.
    """
    layers = [(type(layer).__name__, layer.get_config()) for layer in build_spec_model(spec).layers]
    for name, _ in layers:
        if name not in _LAYER_OPS:
            raise ValueError(f"graph_forward does not support {name} layers")

    def forward(weights: Sequence[tf.Tensor], images: tf.Tensor) -> tf.Tensor:
        remaining = list(weights)
        x = tf.cast(images, tf.float32)
        for name, config in layers:
            x = _LAYER_OPS[name](x, config, remaining)
        return x

    return forward


def _activation(x: tf.Tensor, name: str) -> tf.Tensor:
    if name == "relu":
        return tf.nn.relu(x)
    if name == "tanh":
        return tf.math.tanh(x)
    if name == "linear":
        return x
    raise ValueError(f"graph_forward does not support activation {name!r}")


def _conv2d(x: tf.Tensor, config: dict[str, Any], weights: list[tf.Tensor]) -> tf.Tensor:
    kernel, bias = weights.pop(0), weights.pop(0)
    y = tf.nn.convolution(
        x,
        kernel,
        strides=list(config["strides"]),
        padding=config["padding"].upper(),
        dilations=list(config["dilation_rate"]),
    )
    return _activation(tf.nn.bias_add(y, bias), config["activation"])


def _dense(x: tf.Tensor, config: dict[str, Any], weights: list[tf.Tensor]) -> tf.Tensor:
    kernel, bias = weights.pop(0), weights.pop(0)
    return _activation(tf.nn.bias_add(tf.matmul(x, kernel), bias), config["activation"])


def _rescaling(x: tf.Tensor, config: dict[str, Any], weights: list[tf.Tensor]) -> tf.Tensor:
    return x * tf.cast(config["scale"], x.dtype) + tf.cast(config["offset"], x.dtype)


def _max_pool(x: tf.Tensor, config: dict[str, Any], weights: list[tf.Tensor]) -> tf.Tensor:
    return tf.nn.max_pool2d(x, list(config["pool_size"]), list(config["strides"]), config["padding"].upper())


def _flatten(x: tf.Tensor, config: dict[str, Any], weights: list[tf.Tensor]) -> tf.Tensor:
    return tf.reshape(x, (tf.shape(x)[0], -1))


def _group_norm(x: tf.Tensor, config: dict[str, Any], weights: list[tf.Tensor]) -> tf.Tensor:
    gamma, beta = weights.pop(0), weights.pop(0)
    groups = int(config["groups"])
    shape = tf.shape(x)
    channels = x.shape[-1]
    grouped = tf.reshape(x, tf.concat([shape[:-1], [groups, channels // groups]], axis=0))
    mean, variance = tf.nn.moments(grouped, axes=[1, 2, 4], keepdims=True)
    normed = tf.reshape((grouped - mean) * tf.math.rsqrt(variance + config["epsilon"]), shape)
    return normed * gamma + beta


def _activation_layer(x: tf.Tensor, config: dict[str, Any], weights: list[tf.Tensor]) -> tf.Tensor:
    return _activation(x, config["activation"])


def _identity(x: tf.Tensor, config: dict[str, Any], weights: list[tf.Tensor]) -> tf.Tensor:
    return x


_LAYER_OPS: dict[str, Callable[[tf.Tensor, dict[str, Any], list[tf.Tensor]], tf.Tensor]] = {
    "Rescaling": _rescaling,
    "Conv2D": _conv2d,
    "Dense": _dense,
    "MaxPooling2D": _max_pool,
    "Flatten": _flatten,
    "Dropout": _identity,
    "GroupNormalization": _group_norm,
    "Activation": _activation_layer,
}
