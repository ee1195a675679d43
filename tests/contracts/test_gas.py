"""Gas: submit is O(1) in the model size (the weights never touch the chain) and <= 60,000."""

from eth_hash.auto import keccak

from fedoracle.units import BP

from fltask_harness import model_uri

SUBMIT_GAS_LIMIT = 60_000
KB, MB = 1024, 1024 * 1024


def model_blob(size: int) -> tuple[bytes, bytes]:
    """A deterministic `size`-byte model blob and its keccak256 content hash.

    Calldata costs 4 gas per zero byte and 16 per non-zero byte, so the *hash* (not the model)
    can shift gas by a few units: pick the first variant whose hash has no zero byte, so both
    submissions carry calldata of the same price and any difference would come from the size.
    """
    body = (bytes(range(256)) * (size // 256 + 1))[: size - 4]
    for counter in range(1_000):
        blob = body + counter.to_bytes(4, "big")
        digest = keccak(blob)
        if 0 not in digest:
            return blob, digest
    raise AssertionError("no zero-free digest found")


def test_submit_gas_is_bounded_and_independent_of_model_size(task, registry, devices, payees):
    small, small_hash = model_blob(10 * KB)
    large, large_hash = model_blob(10 * MB)
    assert (len(small), len(large)) == (10 * KB, 10 * MB)
    assert len(model_uri(small_hash)) == len(model_uri(large_hash))  # equal-length pointers

    payee = payees[0]  # same payee: identical calldata except the two hashes
    r_small = task.submit(devices[0], model_hash=small_hash, payee=payee, num_samples=600)
    r_large = task.submit(devices[1], model_hash=large_hash, payee=payee, num_samples=600)
    assert r_small.gas_used == r_large.gas_used, (r_small.gas_used, r_large.gas_used)
    assert r_small.gas_used <= SUBMIT_GAS_LIMIT


def test_submit_gas_only_grows_with_the_pointer(task, registry, devices, payees):
    """What does change gas is the URI's length (calldata + log data), never the model."""
    _, digest = model_blob(10 * KB)
    short = registry.submit(task.task_id, digest, "x" * 32, payees[0], 1, BP, 0, sender=devices[0])
    long = registry.submit(task.task_id, digest, "x" * 64, payees[0], 1, BP, 0, sender=devices[1])
    assert 0 < long.gas_used - short.gas_used <= 32 * (16 + 8) + 3 * 32  # calldata + LOG data + memory
