// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/**
 * @title IFLTaskRegistry
 * @notice The external interface of the federated-learning task registry: its types, events,
 * errors and functions. A publisher escrows a reward and commits to a hidden test set; devices
 * submit commitments to model updates kept off-chain; an oracle posts a verdict per submission,
 * aggregates the accepted ones and commits the next global model; accepted devices pull their share.
 *
 * @dev One registry holds every task. The life of a task:
 *
 *   publish ─► Open(r) ─► Closed(r) ─► [disclose r, verdicts] ─► aggregate ─┬─► Open(r+1)
 *                                                                          └─► AwaitingFinalize ─► Finalized
 *   any phase past its deadline ─► Cancelled (settled rounds stay claimable, the rest is refundable)
 *
 * Sealed submissions: a submission's bytes are encrypted to the round's seal key, an X25519 public
 * key the oracle sets for round 1 with {setSealKey} and for each next round in {aggregate}, with
 * (chain id, registry, task, round, submitting device) as the AEAD's associated data. Only the
 * oracle can read a submission before its round is settled, and a copied hash or blob opens only
 * for the device that sealed it. {aggregate} discloses the round's secret key (`SealKeyDisclosed`),
 * after which anyone can open every submission of the round and re-check its verdict
 * (docs/protocol.md, "Sealed submissions").
 *
 * Units: accuracies and thresholds in basis points (0..MAX_BP); epsilon in 1e-3; delta in 1e-18;
 * clip norm S in 1e-6; times in seconds (block timestamps); money in wei.
 *
 * How this interface grows (the Python side mirrors it and tests/contracts/test_interface.py
 * checks the mirrors): enum members and reason codes are only ever appended, never renumbered or
 * reused, since both travel as uint8; a new reason code is one row in the table below plus
 * `REASON_MAX` in the implementation and `fedoracle.errors.Reason`. Adding a field to an input
 * struct (`TaskParams`, `Submission`, `TestGroup`) changes the selector of the functions taking
 * it; fields of returned structs are appended at the end. A new submission flow (for example a
 * commit then a reveal) adds its functions, events and phases next to the present ones.
 *
 * @custom:reason-codes Why a verdict came out as it did (`Verdict.reason`, `VerdictPosted.reason`,
 * `postVerdict`'s `reason`). This table is the one list of them; a verdict is accepted iff its
 * reason is OK and its accuracy reaches the submission's threshold.
 *   code | name            | meaning
 *   0    | OK              | evaluated; accepted iff `accuracyBp` reaches the submission's `thresholdBp`
 *   1    | BELOW_THRESHOLD | evaluated; `accuracyBp` is below the submission's `thresholdBp`
 *   2    | HASH_MISMATCH   | the bytes fetched do not hash to the submitted `modelHash`
 *   3    | MISSING_BLOB    | no bytes could be fetched for `modelHash` from `modelURI`
 *   4    | UNDECODABLE     | the bytes are not a model blob in the task's encoding
 *   5    | WRONG_SPEC      | the model does not fit the task's model spec (tensors, shapes, dtypes)
 *   6    | NON_FINITE      | the weights hold NaN or infinite values
 *   7    | TOO_LARGE       | the blob exceeds the size limit of the task's model spec
 *   8    | DUPLICATE       | the same model bytes as an earlier submission of the round (a free rider)
 *   9    | SEAL_INVALID    | the bytes do not open with the round's seal key for this device (a copy)
 *   10   | NEAR_DUPLICATE  | the update is a near-copy of an earlier one of the round (cosine bound)
 *   11   | LOSS_ABOVE_MARGIN | the candidate's loss on the round's test groups exceeds the round's
 *        |                 | global model's by more than the task's `lossMarginBp` (relative)
 *
 * @custom:privacy-modes What a task's (epsilonMilli, deltaE18) protect (`TaskParams.privacyMode`,
 * mirrored by `fedoracle.defaults.DP_SCALINGS`); devices train in the task's mode or not at all.
 *   code | name   | unit and mechanism
 *   0    | record | one training record of one device, added or removed; record-level DP-SGD;
 *        |        | (epsilon, delta) is each device's whole budget over every round
 *   1    | sample | the paper's noise sigma*S/D on the update (D: the device's samples): no
 *        |        | formal guarantee (kept to reproduce the paper)
 *   2    | update | one device's whole update, added or removed, per round (noise sigma*S)
 *
 * @custom:aggregation-rules How the oracle combines a round's accepted updates into the next global
 * model (`TaskParams.aggregationRule`, with `aggregationParam` and `aggregationParam2`; mirrored by
 * `fedoracle.learning.robust`). Committed at publish, so devices, attackers and anyone re-checking a
 * round know it.
 *   code | name         | param                     | param2
 *   0    | fedavg       | 0                         | 0     (mean weighted by numSamples)
 *   1    | median       | 0                         | 0     (coordinate-wise)
 *   2    | trimmed_mean | beta per side, in bp      | 0     (0 < beta < 5000)
 *   3    | multi_krum   | f, attackers assumed      | m, updates averaged (0: n - f)
 *   4    | fltrust      | 0                         | 0     (root set: `rootSetHash`, non-zero)
 *
 * Claim window: a share not claimed within `claimWindow` seconds of the task's end (finalize or
 * cancel) can be expired by anyone ({reclaimExpired}) and is then refunded to the publisher, so no
 * wei stays in the contract for good.
 */
interface IFLTaskRegistry {
    // ------------------------------------------------------------------------------------------------
    // Types
    // ------------------------------------------------------------------------------------------------

    /**
     * @notice Where a task is in its life (see the diagram above).
     * @dev Values travel as uint8 (mirrored by `fedoracle.chain.Phase`): append, never reorder.
     * None: no such task; Open: the current round takes submissions; Closed: the round is being
     * evaluated (disclosure, verdicts, aggregation); AwaitingFinalize: the last round is aggregated
     * and the final report is due; Finalized: the report is posted; Cancelled: stopped by a missed
     * deadline or the publisher. In the last two, money can only leave (claims and the refund).
     */
    enum Phase {
        None,
        Open,
        Closed,
        AwaitingFinalize,
        Finalized,
        Cancelled
    }

    /**
     * @notice Outcome of one submission's verdict.
     * @dev Values travel as uint8 (mirrored by `fedoracle.chain.Status`): append, never reorder.
     * None: no verdict yet; Accepted: earns a share of the round's pool; Rejected: earns nothing;
     * Claimed: accepted and paid; Expired: accepted, not claimed within the claim window, and
     * returned to the escrow (see {reclaimExpired}).
     */
    enum Status {
        None,
        Accepted,
        Rejected,
        Claimed,
        Expired
    }

    /**
     * @notice Everything a publisher fixes when publishing a task.
     * @param oracle Who posts verdicts and aggregates (an EOA or a k-of-n oracle contract).
     * @param modelSpecHash keccak256 of the canonical model spec JSON.
     * @param initialModelHash keccak256 of the initial global model's canonical bytes.
     * @param initialModelURI Where those bytes can be fetched.
     * @param thresholdBp Accuracy a local model must reach to be accepted (can only be raised later).
     * @param targetAccuracyBp Global accuracy at which the task converges (0: run all rounds).
     * @param maxRounds Number of rounds at most (>= 1); the reward is split into this many pools.
     * @param maxSubmissionsPerRound Submissions that close a round when reached (0: unlimited).
     * @param epsilonMilli Declared local-DP epsilon x 1e3.
     * @param deltaE18 Declared local-DP delta x 1e18.
     * @param clipMicro Declared L2 clip norm S x 1e6.
     * @param testSetRoot Merkle root over the leaves keccak256(abi.encode(index, salt, groupHash)).
     * @param seedCommitment keccak256(abi.encode(seed)) of the seed that assigns groups to rounds.
     * @param numGroups Test-data groups committed (>= maxRounds * groupsPerRound).
     * @param groupsPerRound Groups disclosed after each round closes (>= 1).
     * @param roundDuration Seconds a round accepts submissions.
     * @param evaluationWindow Seconds for disclosure, verdicts and aggregation after a round closes
     * (and for finalizing after the last aggregation).
     * @param allowlistOnly Whether only allowlisted devices may submit.
     * @param maxSamplesPerDevice The most local samples a submission may declare (>= 1): bounds the
     * FedAvg weight an unproven `numSamples` can claim.
     * @param privacyMode What the declared (epsilon, delta) protect and how devices must train
     * (`@custom:privacy-modes`; at most PRIVACY_MODE_MAX).
     * @param aggregationRule How accepted updates are combined (`@custom:aggregation-rules`; at most
     * AGGREGATION_RULE_MAX).
     * @param aggregationParam The rule's first parameter (zero where the rule has none).
     * @param aggregationParam2 The rule's second parameter (zero where the rule has none).
     * @param lossMarginBp The loss gate (0: off): a candidate whose loss on the round's test groups
     * exceeds the round's global model's by more than this relative margin is rejected with
     * LOSS_ABOVE_MARGIN.
     * @param rootSetHash keccak256 of the public root data set an FLTrust task's oracle trains on
     * (non-zero exactly when the rule is fltrust).
     * @param claimWindow Seconds after the task ends (finalize or cancel) during which shares can be
     * claimed (>= 1); afterwards unclaimed shares can be expired and refunded.
     */
    // Only ever in calldata, where every field takes a full word whatever the order.
    // solhint-disable-next-line gas-struct-packing
    struct TaskParams {
        address oracle;
        bytes32 modelSpecHash;
        bytes32 initialModelHash;
        string initialModelURI;
        uint16 thresholdBp;
        uint16 targetAccuracyBp;
        uint16 maxRounds;
        uint32 maxSubmissionsPerRound;
        uint32 epsilonMilli;
        uint64 deltaE18;
        uint32 clipMicro;
        bytes32 testSetRoot;
        bytes32 seedCommitment;
        uint32 numGroups;
        uint16 groupsPerRound;
        uint32 roundDuration;
        uint32 evaluationWindow;
        bool allowlistOnly;
        uint32 maxSamplesPerDevice;
        uint8 privacyMode;
        uint8 aggregationRule;
        uint16 aggregationParam;
        uint16 aggregationParam2;
        uint16 lossMarginBp;
        bytes32 rootSetHash;
        uint32 claimWindow;
    }

    /**
     * @notice Cold configuration of a task and its money accounting (see {getTask}).
     * @dev Fixed at publish except `seed`, `seedRevealed`, `globalModelHash`, `allocated` and `refunded`.
     * @param publisher Who published (and funded) the task.
     * @param oracle Who posts verdicts and aggregates.
     * @param reward Wei escrowed at publish.
     * @param modelSpecHash keccak256 of the canonical model spec JSON.
     * @param testSetRoot Merkle root of the committed test-data groups.
     * @param seedCommitment keccak256(abi.encode(seed)).
     * @param seed The seed, set on the first disclosure (zero before).
     * @param globalModelHash The current global model (updated by every aggregation).
     * @param targetAccuracyBp Global accuracy at which the task converges (0: run all rounds).
     * @param maxRounds Number of rounds at most.
     * @param groupsPerRound Groups disclosed after each round.
     * @param numGroups Test-data groups committed.
     * @param roundDuration Seconds a round accepts submissions.
     * @param evaluationWindow Seconds for the work after a round closes.
     * @param epsilonMilli Declared local-DP epsilon x 1e3.
     * @param deltaE18 Declared local-DP delta x 1e18.
     * @param clipMicro Declared L2 clip norm S x 1e6.
     * @param seedRevealed Whether `seed` has been disclosed.
     * @param allocated Wei promised to accepted submissions of settled rounds.
     * @param refunded Wei returned to the publisher.
     * @param privacyMode The task's privacy mode (`@custom:privacy-modes`).
     * @param aggregationRule The task's aggregation rule (`@custom:aggregation-rules`).
     * @param aggregationParam The rule's first parameter.
     * @param aggregationParam2 The rule's second parameter.
     * @param lossMarginBp The loss gate's relative margin in bp (0: off).
     * @param claimWindow Seconds after the task's end during which shares can be claimed.
     * @param rootSetHash keccak256 of an FLTrust task's public root data set (zero otherwise).
     */
    // Repacking would save a storage slot per task but reorders `getTask`'s returned tuple: an
    // interface change to make on purpose, not on a linter's hint.
    // solhint-disable-next-line gas-struct-packing
    struct TaskConfig {
        address publisher;
        address oracle;
        uint256 reward;
        bytes32 modelSpecHash;
        bytes32 testSetRoot;
        bytes32 seedCommitment;
        bytes32 seed;
        bytes32 globalModelHash;
        uint16 targetAccuracyBp;
        uint16 maxRounds;
        uint16 groupsPerRound;
        uint32 numGroups;
        uint32 roundDuration;
        uint32 evaluationWindow;
        uint32 epsilonMilli;
        uint64 deltaE18;
        uint32 clipMicro;
        bool seedRevealed;
        uint256 allocated;
        uint256 refunded;
        uint8 privacyMode;
        uint8 aggregationRule;
        uint16 aggregationParam;
        uint16 aggregationParam2;
        uint16 lossMarginBp;
        uint32 claimWindow;
        bytes32 rootSetHash;
    }

    /**
     * @notice Live state of a task (see {getState}).
     * @dev One storage slot: what `submit` reads and writes.
     * @param phase Where the task is in its life.
     * @param round The current round (1-based).
     * @param thresholdBp The accuracy threshold in force for new submissions.
     * @param allowlistOnly Whether only allowlisted devices may submit.
     * @param submissions Submissions in the current round.
     * @param verdicts Verdicts posted in the current round.
     * @param accepted Accepted verdicts in the current round.
     * @param maxSubmissions Submissions a round takes at most (0: unlimited); a full round can be
     * closed by anyone.
     * @param deadline End of the current phase (a block timestamp); once the task is finalized or
     * cancelled, the end of its claim window.
     * @param maxSamples The most local samples a submission may declare (`maxSamplesPerDevice`).
     */
    struct TaskState {
        Phase phase;
        uint16 round;
        uint16 thresholdBp;
        bool allowlistOnly;
        uint32 submissions;
        uint32 verdicts;
        uint32 accepted;
        uint32 maxSubmissions;
        uint40 deadline;
        uint32 maxSamples;
    }

    /**
     * @notice What is recorded about a round once it is closed, disclosed and settled (see {getRound}).
     * @param globalModelHash The global model the round produced (zero until aggregated).
     * @param rewardPerAccepted Wei per accepted submission, fixed at settlement.
     * @param submissions Submissions the round took (set at settlement, with `accepted`).
     * @param accepted Submissions accepted (set at settlement).
     * @param globalAccuracyBp The produced global model's accuracy.
     * @param disclosed Whether the round's test groups are disclosed.
     * @param settled Whether the round's reward pool is settled (claims open).
     * @param sealKey The X25519 public key submissions of the round are sealed to (zero until the
     * oracle sets it).
     */
    struct RoundRecord {
        bytes32 globalModelHash;
        uint128 rewardPerAccepted;
        uint32 submissions;
        uint32 accepted;
        uint16 globalAccuracyBp;
        bool disclosed;
        bool settled;
        bytes32 sealKey;
    }

    /**
     * @notice The oracle's verdict on one submission (see {getVerdict}).
     * @dev Stored packed into the submission's own slot, over its commitment (one slot per
     * submission, written once by `submit` and once by the verdict).
     * @param payee Who receives the submission's reward.
     * @param accuracyBp The candidate model's accuracy on the round's test groups.
     * @param reason A reason code (table in the interface's `@custom:reason-codes`).
     * @param status The verdict's outcome.
     */
    struct Verdict {
        address payee;
        uint16 accuracyBp;
        uint8 reason;
        Status status;
    }

    /**
     * @notice A submission as the device made it: what its commitment binds (see {submissionCommitment}).
     * @param modelHash keccak256 of the sealed blob (the update's canonical bytes, encrypted to the
     * round's seal key for this device).
     * @param payee Who receives the submission's reward.
     * @param thresholdBp The threshold in force when it was submitted (the one it is judged against).
     * @param numSamples Declared number of local training samples (FedAvg weight; 1 to the task's maxSamples).
     */
    struct Submission {
        bytes32 modelHash;
        address payee;
        uint16 thresholdBp;
        uint32 numSamples;
    }

    /**
     * @notice One verdict of a {postVerdicts} batch: the arguments {postVerdict} takes for one device.
     * @param device The submitting device.
     * @param sub The submission as emitted in {ModelSubmitted}.
     * @param accuracyBp Accuracy of the candidate model on the round's test groups.
     * @param reason A reason code (`@custom:reason-codes`).
     */
    // Only ever in calldata, where every field takes a full word whatever the order.
    // solhint-disable-next-line gas-struct-packing
    struct VerdictInput {
        address device;
        Submission sub;
        uint16 accuracyBp;
        uint8 reason;
    }

    /**
     * @notice One revealed test-data group with its Merkle proof.
     * @param index Leaf index in the committed tree.
     * @param salt The leaf's salt (keeps undisclosed groups unguessable).
     * @param groupHash keccak256 of the group's canonical bytes.
     * @param uri Where the group's bytes can be fetched.
     * @param proof Merkle proof of the leaf against `testSetRoot` (OpenZeppelin `MerkleProof`).
     */
    struct TestGroup {
        uint32 index;
        bytes32 salt;
        bytes32 groupHash;
        string uri;
        bytes32[] proof;
    }

    // ------------------------------------------------------------------------------------------------
    // Events (past tense, emitted right after the state change they record)
    // ------------------------------------------------------------------------------------------------

    /**
     * @notice A task was published and its reward escrowed; `RoundOpened` for round 1 follows.
     * @param taskId The new task.
     * @param publisher Who published and funded it.
     * @param oracle Who will post verdicts and aggregate.
     * @param reward Wei escrowed.
     * @param modelSpecHash keccak256 of the canonical model spec JSON.
     * @param initialModelHash keccak256 of the initial global model's bytes.
     * @param initialModelURI Where those bytes can be fetched.
     * @param thresholdBp The initial accuracy threshold.
     * @param maxRounds Number of rounds at most.
     */
    event TaskPublished(
        uint256 indexed taskId,
        address indexed publisher,
        address indexed oracle,
        uint256 reward,
        bytes32 modelSpecHash,
        bytes32 initialModelHash,
        string initialModelURI,
        uint16 thresholdBp,
        uint16 maxRounds
    );

    /**
     * @notice A round opened for submissions, training from the given global model.
     * @param taskId The task.
     * @param round The round opened.
     * @param globalModelHash keccak256 of the global model to train from.
     * @param globalModelURI Where its bytes can be fetched.
     * @param deadline Last block timestamp at which a submission is taken.
     */
    event RoundOpened(
        uint256 indexed taskId, uint16 indexed round, bytes32 globalModelHash, string globalModelURI, uint64 deadline
    );

    /**
     * @notice The round's seal key was set: devices may seal their submissions to it.
     * @param taskId The task.
     * @param round The round whose submissions are sealed to `sealKey`.
     * @param sealKey The oracle's X25519 public key for the round.
     */
    event SealKeySet(uint256 indexed taskId, uint16 indexed round, bytes32 sealKey);

    /**
     * @notice The round's secret seal key was disclosed at settlement: anyone may now open the
     * round's submissions and re-check their verdicts.
     * @param taskId The task.
     * @param round The round settled.
     * @param sealSecret The X25519 secret key whose public key is the round's `sealKey`.
     */
    event SealKeyDisclosed(uint256 indexed taskId, uint16 indexed round, bytes32 sealSecret);

    /**
     * @notice The accuracy threshold for new submissions was raised.
     * @param taskId The task.
     * @param round The open round.
     * @param previousBp The threshold before.
     * @param thresholdBp The threshold now.
     */
    event ThresholdAnnounced(uint256 indexed taskId, uint16 indexed round, uint16 previousBp, uint16 thresholdBp);

    /**
     * @notice A device was added to or removed from a task's allowlist.
     * @param taskId The task.
     * @param device The device account.
     * @param allowed Whether it may now submit.
     */
    event AllowlistUpdated(uint256 indexed taskId, address indexed device, bool allowed);

    /**
     * @notice A device submitted a model update; the arguments are the {Submission} its commitment binds.
     * @param taskId The task.
     * @param round The round.
     * @param device The submitting device.
     * @param payee Who receives the submission's reward.
     * @param modelHash keccak256 of the candidate model's canonical bytes.
     * @param modelURI Where those bytes can be fetched (emitted only, never stored).
     * @param thresholdBp The threshold in force, which the submission will be judged against.
     * @param numSamples Declared number of local training samples.
     * @param epsilonSpentMilli The privacy budget the device declares it has spent on this task so
     * far, this round's training included (x 1e3, in the task's unit and delta; emitted only).
     */
    event ModelSubmitted(
        uint256 indexed taskId,
        uint16 indexed round,
        address indexed device,
        address payee,
        bytes32 modelHash,
        string modelURI,
        uint16 thresholdBp,
        uint32 numSamples,
        uint32 epsilonSpentMilli
    );

    /**
     * @notice A round stopped taking submissions; its evaluation window started.
     * @param taskId The task.
     * @param round The round closed.
     * @param submissions Submissions it took.
     * @param evaluationDeadline End of the window for disclosure, verdicts and aggregation.
     */
    event SubmissionsClosed(uint256 indexed taskId, uint16 indexed round, uint32 submissions, uint64 evaluationDeadline);

    /**
     * @notice The seed that assigns test groups to rounds was revealed (on the first disclosure).
     * @param taskId The task.
     * @param seed The seed, matching the task's `seedCommitment`.
     */
    event SeedRevealed(uint256 indexed taskId, bytes32 seed);

    /**
     * @notice One test-data group of a closed round was disclosed and verified against the root.
     * @param taskId The task.
     * @param round The round it evaluates.
     * @param groupIndex The group's leaf index.
     * @param salt The leaf's salt.
     * @param groupHash keccak256 of the group's canonical bytes.
     * @param uri Where those bytes can be fetched.
     */
    event TestDataDisclosed(
        uint256 indexed taskId, uint16 indexed round, uint32 indexed groupIndex, bytes32 salt, bytes32 groupHash, string uri
    );

    /**
     * @notice The oracle's verdict on one submission was recorded.
     * @param taskId The task.
     * @param round The round.
     * @param device The submitting device.
     * @param modelHash The submission's model hash.
     * @param accuracyBp The candidate model's accuracy on the round's test groups.
     * @param reason A reason code (table in the interface's `@custom:reason-codes`), after the
     * contract's rewrite of a below-threshold OK to BELOW_THRESHOLD.
     * @param accepted Whether the submission earns a share of the round's pool.
     * @param evaluatorHash Identifies the evaluation code and configuration, for re-checking.
     */
    event VerdictPosted(
        uint256 indexed taskId,
        uint16 indexed round,
        address indexed device,
        bytes32 modelHash,
        uint16 accuracyBp,
        uint8 reason,
        bool accepted,
        bytes32 evaluatorHash
    );

    /**
     * @notice A round was aggregated into a new global model and its reward pool settled.
     * @param taskId The task.
     * @param round The round aggregated.
     * @param modelHash keccak256 of the new global model's bytes.
     * @param modelURI Where those bytes can be fetched.
     * @param acceptedCount Accepted submissions sharing the round's pool.
     * @param globalAccuracyBp The new global model's accuracy.
     * @param rewardPerAccepted Wei each accepted submission can claim.
     */
    event GlobalModelUpdated(
        uint256 indexed taskId,
        uint16 indexed round,
        bytes32 modelHash,
        string modelURI,
        uint32 acceptedCount,
        uint16 globalAccuracyBp,
        uint128 rewardPerAccepted
    );

    /**
     * @notice A task was finalized with the oracle's final report.
     * @param taskId The task.
     * @param rounds Rounds it ran.
     * @param finalAccuracyBp Final global accuracy.
     * @param reportHash keccak256 of the evaluation report's bytes.
     * @param reportURI Where the report can be fetched.
     */
    event TaskFinalized(
        uint256 indexed taskId, uint16 rounds, uint16 finalAccuracyBp, bytes32 reportHash, string reportURI
    );

    /**
     * @notice A task was cancelled.
     * @param taskId The task.
     * @param round The round it was in.
     * @param phase The phase it was cancelled from.
     * @param by Who cancelled it.
     */
    event TaskCancelled(uint256 indexed taskId, uint16 indexed round, Phase phase, address by);

    /**
     * @notice An accepted submission's reward was paid.
     * @param taskId The task.
     * @param round The round.
     * @param device The device that submitted.
     * @param payee Who was paid.
     * @param amount Wei paid.
     */
    event RewardClaimed(
        uint256 indexed taskId, uint16 indexed round, address indexed device, address payee, uint256 amount
    );

    /**
     * @notice A device redirected its unclaimed reward (see {setPayee}).
     * @param taskId The task.
     * @param round The round.
     * @param device The device that submitted.
     * @param previousPayee The payee it named before.
     * @param newPayee The payee that {claim} now pays.
     */
    event PayeeChanged(
        uint256 indexed taskId, uint16 indexed round, address indexed device, address previousPayee, address newPayee
    );

    /**
     * @notice Escrow no settled round allocated was returned to the publisher.
     * @param taskId The task.
     * @param publisher Who was paid.
     * @param amount Wei paid.
     */
    event Refunded(uint256 indexed taskId, address indexed publisher, uint256 amount);

    /**
     * @notice An accepted share was not claimed within the claim window and went back to the
     * escrow (refundable to the publisher).
     * @param taskId The task.
     * @param round The round.
     * @param device The device whose share expired.
     * @param amount Wei returned to the escrow.
     */
    event RewardExpired(uint256 indexed taskId, uint16 indexed round, address indexed device, uint256 amount);

    // ------------------------------------------------------------------------------------------------
    // Errors (domain-prefixed, carrying what a caller needs to understand the revert)
    // ------------------------------------------------------------------------------------------------

    /**
     * @notice No task has this id.
     * @param taskId The id asked for.
     */
    error FLTaskUnknown(uint256 taskId);

    /**
     * @notice An argument is zero or out of range.
     * @param name The argument's (or struct field's) name, e.g. "maxRounds" or "modelHash".
     */
    error FLTaskInvalidParameter(string name);

    /// @notice `publish` was called without a reward.
    error FLTaskNoReward();

    /**
     * @notice The call needs the task in another phase.
     * @param taskId The task.
     * @param current Its phase.
     * @param expected The phase the call needs (for `refund`, Finalized stands for Finalized or Cancelled).
     */
    error FLTaskWrongPhase(uint256 taskId, Phase current, Phase expected);

    /**
     * @notice The caller has no right to make this call on this task.
     * @param caller The caller.
     */
    error FLTaskUnauthorized(address caller);

    /**
     * @notice The task takes submissions only from allowlisted devices.
     * @param taskId The task.
     * @param device The device that tried to submit.
     */
    error FLTaskNotAllowlisted(uint256 taskId, address device);

    /**
     * @notice The current phase's deadline has passed.
     * @param taskId The task.
     * @param deadline The deadline.
     */
    error FLTaskDeadlinePassed(uint256 taskId, uint64 deadline);

    /**
     * @notice The call is allowed only after the current phase's deadline.
     * @param taskId The task.
     * @param deadline The deadline.
     */
    error FLTaskDeadlineNotReached(uint256 taskId, uint64 deadline);

    /**
     * @notice The device already submitted in this round.
     * @param taskId The task.
     * @param round The round.
     * @param device The device.
     */
    error FLTaskDuplicateSubmission(uint256 taskId, uint16 round, address device);

    /**
     * @notice A new threshold must be strictly higher than the current one and at most MAX_BP.
     * @param currentBp The threshold in force.
     * @param proposedBp The threshold proposed.
     */
    error FLTaskThresholdNotRaised(uint16 currentBp, uint16 proposedBp);

    /**
     * @notice The threshold in force is above the highest one the submitting device accepts
     * (a threshold raise landed before its submission).
     * @param currentBp The threshold in force.
     * @param maxBp The highest threshold the device accepts.
     */
    error FLTaskThresholdAboveLimit(uint16 currentBp, uint16 maxBp);

    /**
     * @notice The round's test groups are already disclosed.
     * @param taskId The task.
     * @param round The round.
     */
    error FLTaskAlreadyDisclosed(uint256 taskId, uint16 round);

    /**
     * @notice The round's test groups must be disclosed first.
     * @param taskId The task.
     * @param round The round.
     */
    error FLTaskNotDisclosed(uint256 taskId, uint16 round);

    /**
     * @notice The seed does not match the task's seed commitment.
     * @param taskId The task.
     */
    error FLTaskBadSeed(uint256 taskId);

    /**
     * @notice A disclosure must carry exactly `groupsPerRound` groups.
     * @param expected Groups per round.
     * @param given Groups given.
     */
    error FLTaskWrongGroupCount(uint256 expected, uint256 given);

    /**
     * @notice A disclosed group is not the one the seed's shuffle assigns to its slot.
     * @param expectedIndex The leaf index the slot needs.
     * @param givenIndex The leaf index given.
     */
    error FLTaskWrongGroup(uint32 expectedIndex, uint32 givenIndex);

    /**
     * @notice A disclosed group's Merkle proof does not hold against the committed root.
     * @param index The group's leaf index.
     */
    error FLTaskInvalidGroupProof(uint32 index);

    /**
     * @notice The device made no submission in this round.
     * @param taskId The task.
     * @param round The round.
     * @param device The device.
     */
    error FLTaskNoSubmission(uint256 taskId, uint16 round, address device);

    /**
     * @notice The submission given does not match the device's stored commitment.
     * @param taskId The task.
     * @param round The round.
     * @param device The device.
     */
    error FLTaskCommitmentMismatch(uint256 taskId, uint16 round, address device);

    /**
     * @notice The submission already has a verdict.
     * @param taskId The task.
     * @param round The round.
     * @param device The device.
     */
    error FLTaskVerdictAlreadyPosted(uint256 taskId, uint16 round, address device);

    /**
     * @notice A verdict is out of range (accuracy above MAX_BP, reason above REASON_MAX) or
     * contradicts itself (BELOW_THRESHOLD with an accuracy that reaches the threshold).
     * @param accuracyBp The accuracy posted.
     * @param reason The reason code posted.
     */
    error FLTaskInvalidVerdict(uint16 accuracyBp, uint8 reason);

    /**
     * @notice Every submission of the round needs a verdict before aggregation.
     * @param verdicts Verdicts posted.
     * @param submissions Submissions taken.
     */
    error FLTaskVerdictsPending(uint32 verdicts, uint32 submissions);

    /**
     * @notice The round's reward pool is not settled yet.
     * @param taskId The task.
     * @param round The round.
     */
    error FLTaskRoundNotSettled(uint256 taskId, uint16 round);

    /**
     * @notice The submission has no unclaimed reward (not accepted, already claimed, or a zero share).
     * @param taskId The task.
     * @param round The round.
     * @param device The device.
     */
    error FLTaskNothingToClaim(uint256 taskId, uint16 round, address device);

    /**
     * @notice No escrow is left to refund.
     * @param taskId The task.
     */
    error FLTaskNothingToRefund(uint256 taskId);

    /**
     * @notice The task cannot be cancelled in this phase by this caller.
     * @param taskId The task.
     * @param phase Its phase.
     */
    error FLTaskCannotCancel(uint256 taskId, Phase phase);

    /**
     * @notice The open round already has its seal key (it is set once per round).
     * @param taskId The task.
     * @param round The round.
     */
    error FLTaskSealKeyAlreadySet(uint256 taskId, uint16 round);

    /**
     * @notice The open round already took `maxSubmissionsPerRound` submissions (anyone may close it).
     * @param taskId The task.
     * @param round The round.
     * @param maxSubmissions Its cap.
     */
    error FLTaskRoundFull(uint256 taskId, uint16 round, uint32 maxSubmissions);

    /**
     * @notice The task's claim window has ended: unclaimed shares can only be expired.
     * @param taskId The task.
     * @param claimDeadline The end of the window.
     */
    error FLTaskClaimWindowClosed(uint256 taskId, uint64 claimDeadline);

    /**
     * @notice Shares can be expired only once the task has ended and its claim window has passed.
     * @param taskId The task.
     * @param claimDeadline The end of the window (zero while the task runs).
     */
    error FLTaskClaimWindowOpen(uint256 taskId, uint64 claimDeadline);

    // ------------------------------------------------------------------------------------------------
    // Publisher: init() — Steps 1-3 of the paper
    // ------------------------------------------------------------------------------------------------

    /**
     * @notice Publishes a task: escrows `msg.value` as the reward, commits the hidden test set, the
     * initial global model, the model spec, the threshold and the declared DP parameters, and opens
     * round 1 (the paper's `init()`).
     * @param p The task parameters (see {TaskParams}).
     * @return taskId The new task's id (1, 2, ...).
     */
    function publish(TaskParams calldata p) external payable returns (uint256 taskId);

    /**
     * @notice Adds devices to, or removes them from, a task's allowlist (only enforced for tasks
     * published with `allowlistOnly`).
     * @dev Publisher only.
     * @param taskId The task.
     * @param devices The device accounts.
     * @param allowed Whether they may submit.
     */
    function setAllowlist(uint256 taskId, address[] calldata devices, bool allowed) external;

    /**
     * @notice Raises the accuracy threshold in real time so that devices can pre-evaluate before
     * spending gas. A submission is judged against the threshold in force when it was submitted.
     * @dev Publisher or oracle; only upward, only while a round is open.
     * @param taskId The task.
     * @param thresholdBp The new threshold in basis points.
     */
    function announceThreshold(uint256 taskId, uint16 thresholdBp) external;

    // ------------------------------------------------------------------------------------------------
    // Devices: submit_model_update
    // ------------------------------------------------------------------------------------------------

    /**
     * @notice Submits a commitment to a (noisy) model update for the task's open round (the paper's
     * `submit_model_update`). The weights stay off-chain under their content hash; gas does not
     * depend on the model's size. One submission per device per round.
     * @dev Stores {submissionCommitment} of the submission with the threshold in force. A round
     * that has taken `maxSubmissionsPerRound` refuses more ({FLTaskRoundFull}) and anyone may close
     * it, so the last submitter pays what every other does. A `numSamples` of 0 or above the task's
     * `maxSamples` reverts with {FLTaskInvalidParameter}("numSamples").
     * @param taskId The task.
     * @param modelHash keccak256 of the sealed blob (see "Sealed submissions" above).
     * @param modelURI Where the sealed bytes can be fetched (emitted only, never stored).
     * @param payee Who receives this submission's reward.
     * @param numSamples Declared number of local training samples (FedAvg weight; 1 to the task's maxSamples).
     * @param maxThresholdBp The highest threshold the device accepts to be judged against (slippage
     * protection: usually the threshold it read before training). If a threshold raise lands first,
     * the call reverts with {FLTaskThresholdAboveLimit} and the device loses only the failed call's gas.
     * @param epsilonSpentMilli The privacy budget the device has spent on the task so far, this
     * round included (x 1e3; emitted in {ModelSubmitted} for `status` and audits, not checked).
     */
    function submit(
        uint256 taskId,
        bytes32 modelHash,
        string calldata modelURI,
        address payee,
        uint32 numSamples,
        uint16 maxThresholdBp,
        uint32 epsilonSpentMilli
    )
        external;

    // ------------------------------------------------------------------------------------------------
    // Round driving: close, disclose (disclosure_test_data), verdicts (evaluate_local_model)
    // ------------------------------------------------------------------------------------------------

    /**
     * @notice Closes the open round to submissions: evaluation starts, no more updates are taken.
     * @dev The oracle may close at any time; anyone may close once the round's deadline has passed
     * or once it has taken `maxSubmissionsPerRound` submissions.
     * @param taskId The task.
     */
    function closeSubmissions(uint256 taskId) external;

    /**
     * @notice Sets the open round's seal key, the X25519 public key devices encrypt submissions to.
     * @dev Oracle only, once per round, while the round is open (round 1 after publish; later rounds
     * get theirs in {aggregate}). Emits {SealKeySet}.
     * @param taskId The task.
     * @param sealKey The oracle's X25519 public key for the round (non-zero).
     */
    function setSealKey(uint256 taskId, bytes32 sealKey) external;

    /**
     * @notice Discloses the test-data groups of the closed round (the paper's
     * `disclosure_test_data`), revealing the seed on first use. The contract checks that the seed
     * matches its commitment, that group j of round r is the leaf the seed's shuffle assigns to
     * slot (r-1)*groupsPerRound + j, and each group's Merkle proof against the committed root.
     * @dev Publisher or oracle (whoever holds the test set).
     * @param taskId The task.
     * @param seed The seed committed at publish time.
     * @param groups The round's groups, in slot order, each with its salt, hash, URI and proof.
     */
    function discloseTestData(uint256 taskId, bytes32 seed, TestGroup[] calldata groups) external;

    /**
     * @notice Posts the oracle's verdict on one submission of the closed round (the paper's
     * `evaluate_local_model`). Accepted iff `reason` is OK and `accuracyBp` reaches the
     * threshold that was in force when the device submitted.
     * @dev Oracle only, once the round is disclosed. An OK below the threshold is recorded as
     * BELOW_THRESHOLD; a BELOW_THRESHOLD that reaches the threshold is refused.
     * @param taskId The task.
     * @param device The submitting device.
     * @param sub The submission as emitted in {ModelSubmitted}; checked against the stored commitment.
     * @param accuracyBp Accuracy of the candidate model on the round's test groups.
     * @param reason A reason code (table in the interface's `@custom:reason-codes`): OK if the
     * model could be evaluated, else why not.
     * @param evaluatorHash Identifies the evaluation code and configuration, for re-checking.
     */
    function postVerdict(
        uint256 taskId,
        address device,
        Submission calldata sub,
        uint16 accuracyBp,
        uint8 reason,
        bytes32 evaluatorHash
    ) external;

    /**
     * @notice Posts many verdicts of the closed round in one transaction, each under the rules of
     * {postVerdict} (the whole batch reverts if one of them would).
     * @dev Oracle only. The task's counters are written once per batch.
     * @param taskId The task.
     * @param verdicts The verdicts, one per device (a device at most once).
     * @param evaluatorHash Identifies the evaluation code and configuration, for re-checking.
     */
    function postVerdicts(uint256 taskId, VerdictInput[] calldata verdicts, bytes32 evaluatorHash) external;

    // ------------------------------------------------------------------------------------------------
    // Oracle: aggregate_model_update + evaluate_model, finalize_contract + post_evaluation
    // ------------------------------------------------------------------------------------------------

    /**
     * @notice Commits the aggregate of the round's accepted updates as the new global model, with
     * its global accuracy (the paper's `aggregate_model_update` and `evaluate_model`), settles the
     * round's reward pool, and opens the next round unless the task converged or ran its rounds.
     * @dev Oracle only. Requires every submission of the round to have a verdict. With no accepted
     * update the global model is unchanged and `modelHash` must equal it. Discloses the round's
     * secret seal key (`SealKeyDisclosed`: the contract cannot check it against `sealKey`, anyone
     * can off-chain) and sets the next round's seal key (`SealKeySet`) when a next round opens.
     * @param taskId The task.
     * @param modelHash keccak256 of the new global model's canonical bytes.
     * @param modelURI Where those bytes can be fetched.
     * @param globalAccuracyBp The new global model's accuracy on the round's test groups.
     * @param sealSecret The round's X25519 secret seal key (non-zero).
     * @param nextSealKey The next round's X25519 public seal key (ignored when no round opens; zero
     * leaves it to {setSealKey}).
     */
    function aggregate(
        uint256 taskId,
        bytes32 modelHash,
        string calldata modelURI,
        uint16 globalAccuracyBp,
        bytes32 sealSecret,
        bytes32 nextSealKey
    )
        external;

    /**
     * @notice Finalizes a converged (or last-round) task and posts the final evaluation report (the
     * paper's `finalize_contract` and `post_evaluation`). Unallocated escrow becomes refundable.
     * @dev Oracle only.
     * @param taskId The task.
     * @param finalAccuracyBp Final global accuracy.
     * @param reportHash keccak256 of the evaluation report's bytes.
     * @param reportURI Where the report can be fetched.
     */
    function finalize(uint256 taskId, uint16 finalAccuracyBp, bytes32 reportHash, string calldata reportURI)
        external;

    // ------------------------------------------------------------------------------------------------
    // Timeouts and money out (pull payments)
    // ------------------------------------------------------------------------------------------------

    /**
     * @notice Cancels a task whose oracle or publisher missed a deadline, or (publisher only) a task
     * nobody has submitted to yet. A closed round is settled as if every submission still without
     * a verdict had been accepted and refunded: each accepted submission gets pool / (accepted +
     * pending), so an oracle that judges only the devices it favours and then stalls cannot hand
     * them the whole pool. Everything not allocated becomes refundable to the publisher.
     * @param taskId The task.
     */
    function cancel(uint256 taskId) external;

    /**
     * @notice Pays a device's reward for an accepted submission of a settled round to the payee it
     * named. Anyone may trigger it; the money always goes to the recorded payee.
     * @param taskId The task.
     * @param round The round.
     * @param device The device that submitted.
     */
    function claim(uint256 taskId, uint16 round, address device) external;

    /**
     * @notice Pays a device's rewards for several settled rounds in one transfer to each round's
     * recorded payee (one transfer when they are the same), e.g. once at the end of a task.
     * Anyone may trigger it. Reverts with {FLTaskNothingToClaim} if one of the rounds has nothing.
     * @param taskId The task.
     * @param rounds The rounds (each at most once).
     * @param device The device that submitted.
     */
    function claimMany(uint256 taskId, uint16[] calldata rounds, address device) external;

    /**
     * @notice Expires the unclaimed accepted shares of `devices` in `round` once the task has ended
     * and its claim window has passed; their wei becomes refundable to the publisher. Anyone may
     * trigger it.
     * @param taskId The task.
     * @param round The round.
     * @param devices Devices whose verdict in the round is accepted and unclaimed.
     */
    function reclaimExpired(uint256 taskId, uint16 round, address[] calldata devices) external;

    /**
     * @notice Redirects a device's unclaimed reward to another payee, e.g. when the payee it named
     * cannot receive ETH (a contract that reverts on receive would otherwise lock the share for good).
     * @dev Only the device that made the submission (the `device` of {getVerdict}), only while the
     * verdict is accepted and unclaimed and the claim window is open.
     * @param taskId The task.
     * @param round The round.
     * @param newPayee The new payee (non-zero).
     */
    function setPayee(uint256 taskId, uint16 round, address newPayee) external;

    /**
     * @notice Returns the escrow no settled round allocated to the publisher, once the task is
     * finalized or cancelled. Anyone may trigger it; the money always goes to the publisher.
     * @param taskId The task.
     */
    function refund(uint256 taskId) external;

    // ------------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------------

    /**
     * @notice Number of tasks published so far (task ids run from 1 to this).
     * @return The number of tasks.
     */
    function taskCount() external view returns (uint256);

    /**
     * @notice A task's configuration and money accounting.
     * @param taskId The task.
     * @return The task's {TaskConfig} (all zero for an unknown id).
     */
    function getTask(uint256 taskId) external view returns (TaskConfig memory);

    /**
     * @notice A task's live state: phase, round, threshold, counters and the current deadline.
     * @param taskId The task.
     * @return The task's {TaskState} (phase None for an unknown id).
     */
    function getState(uint256 taskId) external view returns (TaskState memory);

    /**
     * @notice What is recorded about one round.
     * @param taskId The task.
     * @param round The round.
     * @return The round's {RoundRecord}.
     */
    function getRound(uint256 taskId, uint16 round) external view returns (RoundRecord memory);

    /**
     * @notice The commitment a device submitted in a round.
     * @param taskId The task.
     * @param round The round.
     * @param device The device.
     * @return The commitment as {submissionCommitment} computes it; zero if there is no submission
     * or once its verdict is posted (the verdict takes the commitment's slot; {ModelSubmitted}
     * keeps what it bound).
     */
    function getCommitment(uint256 taskId, uint16 round, address device) external view returns (bytes32);

    /**
     * @notice The verdict on a device's submission in a round.
     * @param taskId The task.
     * @param round The round.
     * @param device The device.
     * @return The {Verdict} (status None if none was posted).
     */
    function getVerdict(uint256 taskId, uint16 round, address device) external view returns (Verdict memory);

    /**
     * @notice Whether a device is on a task's allowlist.
     * @param taskId The task.
     * @param device The device.
     * @return Whether it is.
     */
    function isAllowlisted(uint256 taskId, address device) external view returns (bool);

    /**
     * @notice Wei the device can claim for a round right now.
     * @param taskId The task.
     * @param round The round.
     * @param device The device.
     * @return The amount (0 if nothing is claimable).
     */
    function claimable(uint256 taskId, uint16 round, address device) external view returns (uint256);

    /**
     * @notice Wei the publisher can have refunded right now.
     * @param taskId The task.
     * @return The amount (0 before the task is finalized or cancelled).
     */
    function refundable(uint256 taskId) external view returns (uint256);

    /**
     * @notice The commitment stored for a submission.
     * @dev keccak256(abi.encode(modelHash, payee, thresholdBp, numSamples)) with its top byte
     * cleared (the verdict that later takes the slot sets it).
     * @param modelHash keccak256 of the candidate model's bytes.
     * @param payee Who receives the submission's reward.
     * @param thresholdBp The threshold in force at submission.
     * @param numSamples Declared number of local training samples.
     * @return The commitment.
     */
    function submissionCommitment(bytes32 modelHash, address payee, uint16 thresholdBp, uint32 numSamples)
        external
        pure
        returns (bytes32);

    /**
     * @notice The Merkle leaf committing test-data group `index`.
     * @dev keccak256(abi.encode(index, salt, groupHash)).
     * @param index The group's leaf index.
     * @param salt The leaf's salt.
     * @param groupHash keccak256 of the group's canonical bytes.
     * @return The leaf.
     */
    function testGroupLeaf(uint32 index, bytes32 salt, bytes32 groupHash) external pure returns (bytes32);

    /**
     * @notice Position `index` of the seed's permutation of `count` items: the swap-or-not shuffle
     * of the Ethereum consensus spec (`compute_shuffled_index`), so group assignments are fixed by
     * the committed seed and cheap to verify for any single slot.
     * @dev Reverts with {FLTaskInvalidParameter} unless `index < count < 2^32`.
     * @param index The position to map.
     * @param count The number of items.
     * @param seed The seed.
     * @return The item at that position of the permutation.
     */
    function shuffledIndex(uint256 index, uint256 count, bytes32 seed) external pure returns (uint256);

    // ------------------------------------------------------------------------------------------------
    // Protocol constants (public constants of the implementation)
    // ------------------------------------------------------------------------------------------------

    // The getters of the implementation's constants keep the constants' UPPER_CASE names (their
    // selectors are part of the ABI), so both linters' mixedCase rule is off for this section.
    // solhint-disable func-name-mixedcase
    // slither-disable-start naming-convention

    /**
     * @notice The largest basis-point value (100%).
     * @return 10000.
     */
    function MAX_BP() external view returns (uint16);

    /**
     * @notice Reason code OK (see `@custom:reason-codes`).
     * @return 0.
     */
    function REASON_OK() external view returns (uint8);

    /**
     * @notice Reason code BELOW_THRESHOLD (see `@custom:reason-codes`).
     * @return 1.
     */
    function REASON_BELOW_THRESHOLD() external view returns (uint8);

    /**
     * @notice The largest reason code a verdict may carry (the last row of `@custom:reason-codes`).
     * @return The largest code.
     */
    function REASON_MAX() external view returns (uint8);

    /**
     * @notice The highest privacy-mode code (the last row of `@custom:privacy-modes`).
     * @return The highest code.
     */
    function PRIVACY_MODE_MAX() external view returns (uint8);

    /**
     * @notice The highest aggregation-rule code (the last row of `@custom:aggregation-rules`).
     * @return The highest code.
     */
    function AGGREGATION_RULE_MAX() external view returns (uint8);

    /**
     * @notice Rounds of the swap-or-not shuffle in {shuffledIndex} (as in the Ethereum consensus spec).
     * @return 90.
     */
    function SHUFFLE_ROUNDS() external view returns (uint8);
    // slither-disable-end naming-convention
    // solhint-enable func-name-mixedcase
}
