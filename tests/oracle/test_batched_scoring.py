"""Scoring in chunks: the in-process pool scores the jobs that waited together, with the scores of one at a time.

No chain is needed: the round's seal keys are derived for a made-up oracle key, registry and
chain id, and the updates are sealed to them as devices seal theirs.
"""

from __future__ import annotations

import asyncio
import dataclasses

from fedoracle.blobstore import LocalBlobStore
from fedoracle.chain import Submission, dev_account
from fedoracle.codec import encode_with_hash
from fedoracle.errors import Reason
from fedoracle.hidden import HiddenTestSet
from fedoracle.seal import SealContext, round_keypair, seal
from oracle.pool import InProcessPool
from oracle.scoring import ScoreJob, Scorer
from tests.conftest import run
from tests.oracle.kit import make_blob

REGISTRY, CHAIN_ID, TASK = "0x" + "12" * 20, 31337, 7
KINDS = ["good", "noise", "good", "nan", "garbage", "missing", "good", "good"]
WANT = [
    Reason.OK,
    Reason.OK,
    Reason.OK,
    Reason.NON_FINITE,
    Reason.UNDECODABLE,
    Reason.MISSING_BLOB,
    Reason.OK,
    Reason.OK,
]


class CountingScorer(Scorer):
    """The real scorer, recording how many jobs each ``score_many`` call got."""

    def __init__(self, blobs: LocalBlobStore, vault: str) -> None:
        super().__init__(blobs, vault)
        self.chunks: list[int] = []

    def score_many(self, jobs):
        self.chunks.append(len(jobs))
        return super().score_many(jobs)


def test_waiting_jobs_are_scored_in_one_chunk_with_the_scores_of_one_at_a_time(models, mnist, tmp_path):
    from fedoracle.learning.data import encode_group, hidden_test_groups

    blobs, vault = LocalBlobStore(tmp_path / "blobs"), tmp_path / "vault"
    spec_hash = blobs.put(models.spec.canonical_json())
    data, global_hash = encode_with_hash(models.initial, models.spec)
    blobs.put(data)
    groups = [
        encode_group(x, y)
        for x, y in hidden_test_groups(mnist.x_test, mnist.y_test, test_examples=300, num_groups=2, seed=0)
    ]
    hidden = HiddenTestSet.create(vault, groups, 2)
    secret, public = round_keypair(b"\x01" * 32, CHAIN_ID, REGISTRY, TASK, 1)
    jobs = []
    for i, kind in enumerate(KINDS):
        device = dev_account(20 + i).address
        digest = make_blob(kind, blobs, models, models.initial, which=i % 2)
        if kind != "missing":  # sealed to the round's key for this device, as a device does
            digest = blobs.put(seal(blobs.get(digest), public, SealContext(CHAIN_ID, REGISTRY, TASK, 1, device)))
        sub = Submission(TASK, 1, device, device, digest, blobs.uri(digest), 5000, 100)
        jobs.append(
            ScoreJob(TASK, 1, spec_hash, global_hash, hidden.root, sub, CHAIN_ID, REGISTRY, "0x" + secret.hex())
        )

    one_at_a_time = [Scorer(blobs, str(vault)).score(job) for job in jobs]
    scorer = CountingScorer(blobs, str(vault))
    pool = InProcessPool(scorer, workers=1, chunk=16)

    async def go():
        try:
            return await asyncio.gather(*(pool.score(job) for job in jobs))
        finally:
            await pool.close()

    chunked = run(go())
    assert [Reason(s.reason) for s in one_at_a_time] == WANT
    assert len({s.accuracy_bp for s in one_at_a_time if s.reason == Reason.OK}) > 1
    # The first job found the thread idle and went alone; the seven that waited went as one chunk.
    assert scorer.chunks == [1, len(KINDS) - 1]
    strip = [dataclasses.replace(s, seconds=0.0) for s in chunked]
    assert strip == [dataclasses.replace(s, seconds=0.0) for s in one_at_a_time]
