"""The task publisher's side (the paper's "Bob"): ``init()``, Steps 1-3.

Builds the model spec and the initial global model, splits the hidden test set into data
groups and commits to them (salted Merkle root + seed commitment), stores what devices need in
the public blob store (spec, initial model) and what only the oracle needs in the private vault
(the groups and the secret), then publishes the task with its escrowed reward.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from fedoracle.blobstore import BlobStore
from fedoracle.chain import TaskParams, TaskRegistry
from fedoracle.codec import encode_with_hash
from fedoracle.defaults import DEFAULTS, TaskSettings
from fedoracle.errors import BlobHashMismatch
from fedoracle.hidden import HiddenTestSet
from fedoracle.units import to_bp


@dataclass(frozen=True)
class TaskPlan(TaskSettings):
    """What a publisher decides about a task (defaults: :data:`fedoracle.defaults.DEFAULTS`).

    The task's own fields (data set, model, rounds, threshold, ε, δ, S) are
    :class:`~fedoracle.defaults.TaskSettings`'.

    Attributes:
        seed: the publisher's seed (initial model, test-set sample); the test set's secrets
            (salts, the disclosure seed) come from the OS, never from it.
    """

    target_accuracy: float = DEFAULTS.target_accuracy
    reward_eth: float = DEFAULTS.reward_eth
    round_duration: int = DEFAULTS.round_duration
    evaluation_window: int = DEFAULTS.evaluation_window
    max_submissions_per_round: int = DEFAULTS.max_submissions
    max_samples_per_device: int = DEFAULTS.max_samples_per_device
    dp_scaling: str = DEFAULTS.dp_scaling
    seed: int = DEFAULTS.task_seed

    def validate(self) -> None:
        """Checks the plan before anything is built or sent.

        Raises:
            ValueError: for a threshold outside [0, 1] or a non-positive round or group count.
        """
        if not 0.0 <= self.initial_threshold <= 1.0:
            raise ValueError("threshold is an accuracy in [0, 1]")
        if self.rounds < 1 or self.groups_per_round < 1:
            raise ValueError("rounds and groups_per_round must be positive")


@dataclass
class PublishedTask:
    """What :func:`publish_task` made."""

    task_id: int
    spec_hash: str
    initial_model_hash: str
    hidden: HiddenTestSet
    block_number: int


def hidden_test_set(
    x_test: NDArray[Any], y_test: NDArray[Any], plan: TaskPlan, vault: str | os.PathLike[str]
) -> HiddenTestSet:
    """Commits to the task's hidden test set in ``vault``.

    ``plan.test_examples`` test examples, drawn by ``plan.seed``, in ``rounds × groups_per_round``
    groups (:func:`fedoracle.learning.data.hidden_test_groups`).
    """
    from fedoracle.learning.data import encode_group, hidden_test_groups

    groups = [
        encode_group(x, y)
        for x, y in hidden_test_groups(
            x_test,
            y_test,
            test_examples=plan.test_examples,
            num_groups=plan.rounds * plan.groups_per_round,
            seed=plan.seed,
        )
    ]
    return HiddenTestSet.create(vault, groups, plan.groups_per_round)


async def publish_task(
    registry: TaskRegistry,
    blobs: BlobStore,
    vault: str | os.PathLike[str],
    plan: TaskPlan,
    oracle: str,
    dataset: Any = None,
) -> PublishedTask:
    """Prepares and publishes one task (``init()``); returns its id and commitments.

    Args:
        registry: the registry, seen through the publisher's account.
        blobs: the public blob store (spec and initial model go there).
        vault: the private folder the oracle reads the hidden test set from.
        plan: the task's parameters.
        oracle: the oracle's address.
        dataset: a loaded ``fedoracle.learning.data.Dataset`` (loaded from ``plan.dataset`` if None).
    """
    from fedoracle.learning.data import load_dataset
    from fedoracle.learning.models import initial_weights, model_spec

    plan.validate()
    data = dataset if dataset is not None else load_dataset(plan.dataset)
    spec = model_spec(plan.architecture, data.input_shape, data.num_classes)
    if (stored := blobs.put(spec.canonical_json())) != spec.spec_hash:
        raise BlobHashMismatch(spec.spec_hash, stored)  # the spec hash is not the hash of its canonical JSON
    weights = initial_weights(spec, plan.seed)
    model_bytes, model_hash = encode_with_hash(weights, spec)
    blobs.put(model_bytes)
    hidden = hidden_test_set(data.x_test, data.y_test, plan, Path(vault))
    params = TaskParams(
        oracle=oracle,
        model_spec_hash=spec.spec_hash,
        initial_model_hash=model_hash,
        initial_model_uri=blobs.uri(model_hash),
        threshold_bp=to_bp(plan.initial_threshold),
        target_accuracy_bp=to_bp(plan.target_accuracy),
        test_set_root=hidden.commitment.root,
        seed_commitment=hidden.commitment.seed_commitment,
        num_groups=hidden.commitment.num_groups,
        groups_per_round=plan.groups_per_round,
        max_rounds=plan.rounds,
        max_submissions_per_round=plan.max_submissions_per_round,
        epsilon=plan.epsilon,
        delta=plan.delta,
        clip=plan.clip,
        round_duration=plan.round_duration,
        evaluation_window=plan.evaluation_window,
        max_samples_per_device=plan.max_samples_per_device,
        privacy_mode=plan.dp_scaling,
    )
    task_id, receipt = await registry.publish(params, int(plan.reward_eth * 10**18))
    return PublishedTask(task_id, spec.spec_hash, model_hash, hidden, receipt["blockNumber"])
