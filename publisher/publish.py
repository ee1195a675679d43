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
from fedoracle.hashing import to_bytes32
from fedoracle.hidden import HiddenTestSet
from fedoracle.rules import AggregationRule, rule_from_options
from fedoracle.units import BP, to_bp


@dataclass(frozen=True)
class TaskPlan(TaskSettings):
    """What a publisher decides about a task (defaults: :data:`fedoracle.defaults.DEFAULTS`).

    The task's own fields (data set, model, rounds, threshold, ε, δ, S) are
    :class:`~fedoracle.defaults.TaskSettings`'.

    Attributes:
        aggregation, trim_fraction, krum_f, krum_m: the task's aggregation rule
            (:class:`~fedoracle.rules.AggregationRule`), committed at publish.
        loss_margin_bp: the loss gate's relative margin in basis points (0: off).
        claim_window: seconds after the task's end during which rewards can be claimed.
        root_examples: examples of an FLTrust task's public root set (drawn from the training
            split by ``seed``; never from the hidden test set).
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
    aggregation: str = DEFAULTS.aggregation
    trim_fraction: float = DEFAULTS.trim_fraction
    krum_f: int = DEFAULTS.krum_f
    krum_m: int = DEFAULTS.krum_m
    loss_margin_bp: int = DEFAULTS.loss_margin_bp
    claim_window: int = DEFAULTS.claim_window
    root_examples: int = DEFAULTS.root_examples
    seed: int = DEFAULTS.task_seed

    @property
    def rule(self) -> AggregationRule:
        """The task's aggregation rule as the contract records it."""
        return rule_from_options(
            self.aggregation, trim_fraction=self.trim_fraction, krum_f=self.krum_f, krum_m=self.krum_m
        )

    def validate(self) -> None:
        """Checks the plan before anything is built or sent.

        Raises:
            ValueError: for a threshold outside [0, 1] or a non-positive round or group count.
        """
        if not 0.0 <= self.initial_threshold <= 1.0:
            raise ValueError("threshold is an accuracy in [0, 1]")
        if self.rounds < 1 or self.groups_per_round < 1:
            raise ValueError("rounds and groups_per_round must be positive")
        if self.claim_window < 1:
            raise ValueError("claim_window must be at least one second")
        if self.aggregation == "fltrust" and self.root_examples < 1:
            raise ValueError("an FLTrust task needs a root set (root_examples >= 1)")
        if not 0 <= self.loss_margin_bp <= BP:
            raise ValueError(f"loss_margin_bp {self.loss_margin_bp} is not in 0..{BP}")
        _ = self.rule  # raises ValueError for an unknown rule or a parameter out of range


@dataclass
class PublishedTask:
    """What :func:`publish_task` made."""

    task_id: int
    spec_hash: str
    initial_model_hash: str
    hidden: HiddenTestSet
    block_number: int
    root_set_hash: str | None = None


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
    root_hash = publish_root_set(data.x_train, data.y_train, plan, blobs) if plan.aggregation == "fltrust" else None
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
        aggregation=plan.rule,
        loss_margin_bp=plan.loss_margin_bp,
        root_set_hash=to_bytes32(root_hash) if root_hash else bytes(32),
        claim_window=plan.claim_window,
    )
    task_id, receipt = await registry.publish(params, int(plan.reward_eth * 10**18))
    return PublishedTask(task_id, spec.spec_hash, model_hash, hidden, receipt["blockNumber"], root_hash)


def publish_root_set(x_train: NDArray[Any], y_train: NDArray[Any], plan: TaskPlan, blobs: BlobStore) -> str:
    """Draws an FLTrust task's root set from the training split and stores it publicly; returns its hash.

    ``plan.root_examples`` examples drawn by ``plan.seed``, in the test groups' encoding
    (:func:`fedoracle.learning.data.encode_group`). The root set is public from publish (attackers
    may know it, as in FLTrust's adaptive-attack evaluation); its hash is ``TaskParams.rootSetHash``.
    """
    import numpy as np

    from fedoracle.learning.data import encode_group

    pick = np.random.default_rng(plan.seed).choice(len(y_train), size=plan.root_examples, replace=False)
    return blobs.put(encode_group(x_train[np.sort(pick)], y_train[np.sort(pick)]))
