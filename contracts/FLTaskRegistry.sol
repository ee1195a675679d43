// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/**
 * @title FLTaskRegistry
 * @notice The on-chain half of a secure federated-learning marketplace (after Liu et al., "A Secure
 * Federated Learning Framework for 5G Networks", 2020). A publisher escrows an ETH reward and commits
 * to a hidden test set; devices submit commitments to noisy model updates (the weights stay off-chain,
 * content-addressed); an oracle posts a verdict per submission, aggregates the accepted ones and
 * commits the next global model; accepted devices pull their share of the reward.
 *
 * @dev One registry holds every task, so a fleet watches a single address. Per task:
 *
 *   publish ─► Open(r) ─► Closed(r) ─► [disclose r, verdicts] ─► aggregate ─┬─► Open(r+1)
 *                                                                          └─► AwaitingFinalize ─► Finalized
 *   any phase past its deadline ─► Cancelled (settled rounds stay claimable, the rest is refundable)
 *
 * Departures from the paper (see docs/protocol.md): the oracle, not miners, evaluates models (an EVM
 * cannot run a neural network); test groups are assigned to rounds by a committed seed through a
 * swap-or-not shuffle, not by block hashes (which a block producer can steer); rewards are pulled.
 *
 * Reward split: the escrow is divided into `maxRounds` equal round pools (the last takes the
 * rounding remainder). When round r is aggregated, its pool is split equally among its accepted
 * submissions; a round with none, and rounds never run, return their pool to the publisher. Equal
 * shares among devices that pass the accuracy gate pay for qualified work without rewarding tiny
 * accuracy differences that local-DP noise dominates, and a settled round's earnings can no longer be
 * taken away by a later failure of the oracle or the publisher.
 *
 * Units: accuracies and thresholds in basis points (0..10000); epsilon in 1e-3; delta in 1e-18;
 * clip norm S in 1e-6; times in seconds (block timestamps); money in wei.
 */
contract FLTaskRegistry is ReentrancyGuard {
    // ------------------------------------------------------------------------------------------------
    // Types
    // ------------------------------------------------------------------------------------------------

    enum Phase {
        None,
        Open,
        Closed,
        AwaitingFinalize,
        Finalized,
        Cancelled
    }

    /// @dev Verdict outcome of one submission.
    enum Status {
        None,
        Accepted,
        Rejected,
        Claimed
    }

    /// @dev Reason codes posted with a verdict (mirrored by `fedoracle.errors.Reason`).
    uint8 public constant REASON_OK = 0;
    uint8 public constant REASON_BELOW_THRESHOLD = 1;
    uint8 public constant REASON_MAX = 8;

    uint16 public constant MAX_BP = 10_000;
    /// @dev Rounds of the swap-or-not shuffle (as in the Ethereum consensus spec).
    uint8 public constant SHUFFLE_ROUNDS = 90;

    /// @notice Everything a publisher fixes when publishing a task.
    struct TaskParams {
        address oracle; // who posts verdicts and aggregates (an EOA or a k-of-n oracle contract)
        bytes32 modelSpecHash; // keccak256 of the canonical model spec JSON
        bytes32 initialModelHash; // keccak256 of the initial global model's canonical bytes
        string initialModelURI; // where those bytes can be fetched
        uint16 thresholdBp; // accuracy a local model must reach to be accepted
        uint16 targetAccuracyBp; // global accuracy at which the task converges (0: run all rounds)
        uint16 maxRounds;
        uint32 maxSubmissionsPerRound; // 0: unlimited; reaching it closes the round
        uint32 epsilonMilli; // declared local-DP epsilon x 1e3
        uint64 deltaE18; // declared local-DP delta x 1e18
        uint32 clipMicro; // declared L2 clip norm S x 1e6
        bytes32 testSetRoot; // Merkle root over keccak256(abi.encode(index, salt, groupHash))
        bytes32 seedCommitment; // keccak256(abi.encode(seed))
        uint32 numGroups; // test-data groups committed (>= maxRounds * groupsPerRound)
        uint16 groupsPerRound; // groups disclosed after each round closes
        uint32 roundDuration; // seconds a round accepts submissions
        uint32 evaluationWindow; // seconds for disclosure, verdicts and aggregation after close
        bool allowlistOnly; // only allowlisted devices may submit
    }

    /// @dev Cold configuration of a task; fixed at publish except the noted fields.
    struct TaskConfig {
        address publisher;
        address oracle;
        uint256 reward;
        bytes32 modelSpecHash;
        bytes32 testSetRoot;
        bytes32 seedCommitment;
        bytes32 seed; // set on the first disclosure
        bytes32 globalModelHash; // updated by every aggregation
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
        uint256 allocated; // wei promised to accepted submissions of settled rounds
        uint256 refunded; // wei returned to the publisher
    }

    /// @dev Hot state that `submit` reads and writes: one storage slot.
    struct TaskState {
        Phase phase;
        uint16 round;
        uint16 thresholdBp;
        bool allowlistOnly;
        uint32 submissions; // in the current round
        uint32 verdicts; // in the current round
        uint32 accepted; // in the current round
        uint32 maxSubmissions; // per round; 0: unlimited
        uint64 deadline; // of the current phase
    }

    /// @notice What is recorded about a round once it is closed, disclosed and settled.
    struct RoundRecord {
        bytes32 globalModelHash; // model the round produced (zero until aggregated)
        uint128 rewardPerAccepted; // wei per accepted submission, fixed at settlement
        uint32 submissions;
        uint32 accepted;
        uint16 globalAccuracyBp;
        bool disclosed;
        bool settled;
    }

    /// @notice The oracle's verdict on one submission.
    struct Verdict {
        address payee;
        uint16 accuracyBp;
        uint8 reason;
        Status status;
    }

    /// @notice A submission as the device made it (what its commitment binds).
    struct Submission {
        bytes32 modelHash;
        address payee;
        uint16 thresholdBp;
        uint32 numSamples;
    }

    /// @notice One revealed test-data group with its Merkle proof.
    struct TestGroup {
        uint32 index; // leaf index in the committed tree
        bytes32 salt;
        bytes32 groupHash; // keccak256 of the group's canonical bytes
        string uri; // where the group's bytes can be fetched
        bytes32[] proof;
    }

    // ------------------------------------------------------------------------------------------------
    // Storage (private, with getters below)
    // ------------------------------------------------------------------------------------------------

    uint256 private _taskCount;
    mapping(uint256 taskId => TaskConfig) private _configs;
    mapping(uint256 taskId => TaskState) private _states;
    mapping(uint256 taskId => mapping(uint16 round => RoundRecord)) private _rounds;
    /// @dev keccak256(abi.encode(modelHash, payee, thresholdBp, numSamples)); one slot per submission.
    mapping(uint256 taskId => mapping(uint16 round => mapping(address device => bytes32))) private _commitments;
    mapping(uint256 taskId => mapping(uint16 round => mapping(address device => Verdict))) private _verdicts;
    mapping(uint256 taskId => mapping(address device => bool)) private _allowed;

    // ------------------------------------------------------------------------------------------------
    // Events (past tense, emitted right after the state change they record)
    // ------------------------------------------------------------------------------------------------

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
    event RoundOpened(
        uint256 indexed taskId, uint16 indexed round, bytes32 globalModelHash, string globalModelURI, uint64 deadline
    );
    event ThresholdAnnounced(uint256 indexed taskId, uint16 indexed round, uint16 previousBp, uint16 thresholdBp);
    event AllowlistUpdated(uint256 indexed taskId, address indexed device, bool allowed);
    event ModelSubmitted(
        uint256 indexed taskId,
        uint16 indexed round,
        address indexed device,
        address payee,
        bytes32 modelHash,
        string modelURI,
        uint16 thresholdBp,
        uint32 numSamples
    );
    event SubmissionsClosed(uint256 indexed taskId, uint16 indexed round, uint32 submissions, uint64 evaluationDeadline);
    event SeedRevealed(uint256 indexed taskId, bytes32 seed);
    event TestDataDisclosed(
        uint256 indexed taskId, uint16 indexed round, uint32 indexed groupIndex, bytes32 salt, bytes32 groupHash, string uri
    );
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
    event GlobalModelUpdated(
        uint256 indexed taskId,
        uint16 indexed round,
        bytes32 modelHash,
        string modelURI,
        uint32 acceptedCount,
        uint16 globalAccuracyBp,
        uint128 rewardPerAccepted
    );
    event TaskFinalized(
        uint256 indexed taskId, uint16 rounds, uint16 finalAccuracyBp, bytes32 reportHash, string reportURI
    );
    event TaskCancelled(uint256 indexed taskId, uint16 indexed round, Phase phase, address by);
    event RewardClaimed(
        uint256 indexed taskId, uint16 indexed round, address indexed device, address payee, uint256 amount
    );
    event Refunded(uint256 indexed taskId, address indexed publisher, uint256 amount);

    // ------------------------------------------------------------------------------------------------
    // Errors (domain-prefixed, carrying what a caller needs to understand the revert)
    // ------------------------------------------------------------------------------------------------

    error FLTaskUnknown(uint256 taskId);
    error FLTaskInvalidParameter(string name);
    error FLTaskNoReward();
    error FLTaskWrongPhase(uint256 taskId, Phase current, Phase expected);
    error FLTaskUnauthorized(address caller);
    error FLTaskNotAllowlisted(uint256 taskId, address device);
    error FLTaskDeadlinePassed(uint256 taskId, uint64 deadline);
    error FLTaskDeadlineNotReached(uint256 taskId, uint64 deadline);
    error FLTaskDuplicateSubmission(uint256 taskId, uint16 round, address device);
    error FLTaskThresholdNotRaised(uint16 currentBp, uint16 proposedBp);
    error FLTaskAlreadyDisclosed(uint256 taskId, uint16 round);
    error FLTaskNotDisclosed(uint256 taskId, uint16 round);
    error FLTaskBadSeed(uint256 taskId);
    error FLTaskWrongGroupCount(uint256 expected, uint256 given);
    error FLTaskWrongGroup(uint32 expectedIndex, uint32 givenIndex);
    error FLTaskInvalidGroupProof(uint32 index);
    error FLTaskNoSubmission(uint256 taskId, uint16 round, address device);
    error FLTaskCommitmentMismatch(uint256 taskId, uint16 round, address device);
    error FLTaskVerdictAlreadyPosted(uint256 taskId, uint16 round, address device);
    error FLTaskInvalidVerdict(uint16 accuracyBp, uint8 reason);
    error FLTaskVerdictsPending(uint32 verdicts, uint32 submissions);
    error FLTaskRoundNotSettled(uint256 taskId, uint16 round);
    error FLTaskNothingToClaim(uint256 taskId, uint16 round, address device);
    error FLTaskNothingToRefund(uint256 taskId);
    error FLTaskCannotCancel(uint256 taskId, Phase phase);

    // ------------------------------------------------------------------------------------------------
    // Modifiers
    // ------------------------------------------------------------------------------------------------

    modifier onlyOracle(uint256 taskId) {
        if (msg.sender != _configs[taskId].oracle) revert FLTaskUnauthorized(msg.sender);
        _;
    }

    modifier known(uint256 taskId) {
        // An enum tag, not a balance or a time: slither's strict-equality warning does not apply.
        // slither-disable-next-line incorrect-equality
        if (_states[taskId].phase == Phase.None) revert FLTaskUnknown(taskId);
        _;
    }

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
    function publish(TaskParams calldata p) external payable returns (uint256 taskId) {
        if (msg.value == 0) revert FLTaskNoReward();
        // Per-submission rewards are stored as uint128; no real escrow comes near this bound.
        if (msg.value > type(uint128).max) revert FLTaskInvalidParameter("reward");
        if (p.oracle == address(0)) revert FLTaskInvalidParameter("oracle");
        if (p.modelSpecHash == bytes32(0)) revert FLTaskInvalidParameter("modelSpecHash");
        if (p.initialModelHash == bytes32(0)) revert FLTaskInvalidParameter("initialModelHash");
        if (p.thresholdBp > MAX_BP) revert FLTaskInvalidParameter("thresholdBp");
        if (p.targetAccuracyBp > MAX_BP) revert FLTaskInvalidParameter("targetAccuracyBp");
        if (p.maxRounds == 0) revert FLTaskInvalidParameter("maxRounds");
        if (p.testSetRoot == bytes32(0)) revert FLTaskInvalidParameter("testSetRoot");
        if (p.seedCommitment == bytes32(0)) revert FLTaskInvalidParameter("seedCommitment");
        if (p.groupsPerRound == 0 || uint256(p.numGroups) < uint256(p.maxRounds) * p.groupsPerRound) {
            revert FLTaskInvalidParameter("numGroups");
        }
        if (p.roundDuration == 0) revert FLTaskInvalidParameter("roundDuration");
        if (p.evaluationWindow == 0) revert FLTaskInvalidParameter("evaluationWindow");

        taskId = ++_taskCount;
        TaskConfig storage c = _configs[taskId];
        c.publisher = msg.sender;
        c.oracle = p.oracle;
        c.reward = msg.value;
        c.modelSpecHash = p.modelSpecHash;
        c.testSetRoot = p.testSetRoot;
        c.seedCommitment = p.seedCommitment;
        c.globalModelHash = p.initialModelHash;
        c.targetAccuracyBp = p.targetAccuracyBp;
        c.maxRounds = p.maxRounds;
        c.groupsPerRound = p.groupsPerRound;
        c.numGroups = p.numGroups;
        c.roundDuration = p.roundDuration;
        c.evaluationWindow = p.evaluationWindow;
        c.epsilonMilli = p.epsilonMilli;
        c.deltaE18 = p.deltaE18;
        c.clipMicro = p.clipMicro;
        TaskState storage s = _states[taskId];
        s.thresholdBp = p.thresholdBp;
        s.allowlistOnly = p.allowlistOnly;
        s.maxSubmissions = p.maxSubmissionsPerRound;
        emit TaskPublished(
            taskId,
            msg.sender,
            p.oracle,
            msg.value,
            p.modelSpecHash,
            p.initialModelHash,
            p.initialModelURI,
            p.thresholdBp,
            p.maxRounds
        );
        _openRound(taskId, 1, p.initialModelHash, p.initialModelURI);
    }

    /**
     * @notice Adds devices to, or removes them from, a task's allowlist (only enforced for tasks
     * published with `allowlistOnly`).
     * @param taskId The task.
     * @param devices The device accounts.
     * @param allowed Whether they may submit.
     */
    function setAllowlist(uint256 taskId, address[] calldata devices, bool allowed) external known(taskId) {
        if (msg.sender != _configs[taskId].publisher) revert FLTaskUnauthorized(msg.sender);
        for (uint256 i = 0; i < devices.length; ++i) {
            _allowed[taskId][devices[i]] = allowed;
            emit AllowlistUpdated(taskId, devices[i], allowed);
        }
    }

    /**
     * @notice Raises the accuracy threshold in real time so that devices can pre-evaluate before
     * spending gas. A submission is judged against the threshold in force when it was submitted.
     * @dev Publisher or oracle; only upward, only while a round is open.
     * @param taskId The task.
     * @param thresholdBp The new threshold in basis points.
     */
    function announceThreshold(uint256 taskId, uint16 thresholdBp) external known(taskId) {
        TaskConfig storage c = _configs[taskId];
        if (msg.sender != c.publisher && msg.sender != c.oracle) revert FLTaskUnauthorized(msg.sender);
        TaskState storage s = _states[taskId];
        if (s.phase != Phase.Open) revert FLTaskWrongPhase(taskId, s.phase, Phase.Open);
        uint16 previous = s.thresholdBp;
        if (thresholdBp <= previous || thresholdBp > MAX_BP) revert FLTaskThresholdNotRaised(previous, thresholdBp);
        s.thresholdBp = thresholdBp;
        emit ThresholdAnnounced(taskId, s.round, previous, thresholdBp);
    }

    // ------------------------------------------------------------------------------------------------
    // Devices: submit_model_update
    // ------------------------------------------------------------------------------------------------

    /**
     * @notice Submits a commitment to a (noisy) model update for the task's open round (the paper's
     * `submit_model_update`). The weights stay off-chain under their content hash; gas does not
     * depend on the model's size. One submission per device per round.
     * @param taskId The task.
     * @param modelHash keccak256 of the candidate model's canonical bytes.
     * @param modelURI Where the bytes can be fetched (emitted only, never stored).
     * @param payee Who receives this submission's reward.
     * @param numSamples Declared number of local training samples (FedAvg weight; 0 if undeclared).
     */
    function submit(uint256 taskId, bytes32 modelHash, string calldata modelURI, address payee, uint32 numSamples)
        external
    {
        TaskState storage s = _states[taskId];
        TaskState memory st = s;
        if (st.phase != Phase.Open) {
            if (st.phase == Phase.None) revert FLTaskUnknown(taskId);
            revert FLTaskWrongPhase(taskId, st.phase, Phase.Open);
        }
        if (block.timestamp > st.deadline) revert FLTaskDeadlinePassed(taskId, st.deadline);
        if (st.allowlistOnly && !_allowed[taskId][msg.sender]) revert FLTaskNotAllowlisted(taskId, msg.sender);
        if (modelHash == bytes32(0)) revert FLTaskInvalidParameter("modelHash");
        if (payee == address(0)) revert FLTaskInvalidParameter("payee");
        bytes32 slot = _commitments[taskId][st.round][msg.sender];
        if (slot != bytes32(0)) revert FLTaskDuplicateSubmission(taskId, st.round, msg.sender);

        _commitments[taskId][st.round][msg.sender] = _commitment(modelHash, payee, st.thresholdBp, numSamples);
        uint32 count = st.submissions + 1;
        s.submissions = count;
        emit ModelSubmitted(taskId, st.round, msg.sender, payee, modelHash, modelURI, st.thresholdBp, numSamples);

        if (st.maxSubmissions != 0 && count >= st.maxSubmissions) _close(taskId, s);
    }

    // ------------------------------------------------------------------------------------------------
    // Round driving: close, disclose (disclosure_test_data), verdicts (evaluate_local_model)
    // ------------------------------------------------------------------------------------------------

    /**
     * @notice Closes the open round to submissions: evaluation starts, no more updates are taken.
     * @dev The oracle may close at any time; anyone may close once the round's deadline has passed.
     * @param taskId The task.
     */
    function closeSubmissions(uint256 taskId) external known(taskId) {
        TaskState storage s = _states[taskId];
        if (s.phase != Phase.Open) revert FLTaskWrongPhase(taskId, s.phase, Phase.Open);
        if (msg.sender != _configs[taskId].oracle && block.timestamp <= s.deadline) {
            revert FLTaskDeadlineNotReached(taskId, s.deadline);
        }
        _close(taskId, s);
    }

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
    function discloseTestData(uint256 taskId, bytes32 seed, TestGroup[] calldata groups) external known(taskId) {
        TaskConfig storage c = _configs[taskId];
        if (msg.sender != c.publisher && msg.sender != c.oracle) revert FLTaskUnauthorized(msg.sender);
        TaskState storage s = _states[taskId];
        if (s.phase != Phase.Closed) revert FLTaskWrongPhase(taskId, s.phase, Phase.Closed);
        uint16 round = s.round;
        RoundRecord storage rec = _rounds[taskId][round];
        if (rec.disclosed) revert FLTaskAlreadyDisclosed(taskId, round);
        if (keccak256(abi.encode(seed)) != c.seedCommitment) revert FLTaskBadSeed(taskId);
        uint256 perRound = c.groupsPerRound;
        if (groups.length != perRound) revert FLTaskWrongGroupCount(perRound, groups.length);

        uint256 firstSlot = uint256(round - 1) * perRound;
        for (uint256 j = 0; j < perRound; ++j) {
            _verifyGroup(groups[j], firstSlot + j, c.numGroups, seed, c.testSetRoot);
        }

        rec.disclosed = true;
        if (!c.seedRevealed) {
            c.seedRevealed = true;
            c.seed = seed;
            emit SeedRevealed(taskId, seed);
        }
        for (uint256 j = 0; j < perRound; ++j) {
            TestGroup calldata g = groups[j];
            emit TestDataDisclosed(taskId, round, g.index, g.salt, g.groupHash, g.uri);
        }
    }

    /**
     * @notice Posts the oracle's verdict on one submission of the closed round (the paper's
     * `evaluate_local_model`). Accepted iff `reason == REASON_OK` and `accuracyBp` reaches the
     * threshold that was in force when the device submitted.
     * @param taskId The task.
     * @param device The submitting device.
     * @param sub The submission as emitted in {ModelSubmitted}; checked against the stored commitment.
     * @param accuracyBp Accuracy of the candidate model on the round's test groups.
     * @param reason 0 if the model could be evaluated, else why not (hash mismatch, missing, ...).
     * @param evaluatorHash Identifies the evaluation code and configuration, for re-checking.
     */
    function postVerdict(
        uint256 taskId,
        address device,
        Submission calldata sub,
        uint16 accuracyBp,
        uint8 reason,
        bytes32 evaluatorHash
    ) external known(taskId) onlyOracle(taskId) {
        TaskState storage s = _states[taskId];
        if (s.phase != Phase.Closed) revert FLTaskWrongPhase(taskId, s.phase, Phase.Closed);
        uint16 round = s.round;
        if (!_rounds[taskId][round].disclosed) revert FLTaskNotDisclosed(taskId, round);
        bytes32 stored = _commitments[taskId][round][device];
        if (stored == bytes32(0)) revert FLTaskNoSubmission(taskId, round, device);
        if (stored != _commitment(sub.modelHash, sub.payee, sub.thresholdBp, sub.numSamples)) {
            revert FLTaskCommitmentMismatch(taskId, round, device);
        }
        Verdict storage v = _verdicts[taskId][round][device];
        if (v.status != Status.None) revert FLTaskVerdictAlreadyPosted(taskId, round, device);
        if (accuracyBp > MAX_BP || reason > REASON_MAX) revert FLTaskInvalidVerdict(accuracyBp, reason);
        // A "below threshold" verdict must be: it would otherwise reject a model that qualified.
        if (reason == REASON_BELOW_THRESHOLD && accuracyBp >= sub.thresholdBp) {
            revert FLTaskInvalidVerdict(accuracyBp, reason);
        }

        if (reason == REASON_OK && accuracyBp < sub.thresholdBp) reason = REASON_BELOW_THRESHOLD;
        bool accepted = reason == REASON_OK;
        v.payee = sub.payee;
        v.accuracyBp = accuracyBp;
        v.reason = reason;
        v.status = accepted ? Status.Accepted : Status.Rejected;
        s.verdicts += 1;
        if (accepted) s.accepted += 1;
        emit VerdictPosted(taskId, round, device, sub.modelHash, accuracyBp, reason, accepted, evaluatorHash);
    }

    // ------------------------------------------------------------------------------------------------
    // Oracle: aggregate_model_update + evaluate_model, finalize_contract + post_evaluation
    // ------------------------------------------------------------------------------------------------

    /**
     * @notice Commits the aggregate of the round's accepted updates as the new global model, with
     * its global accuracy (the paper's `aggregate_model_update` and `evaluate_model`), settles the
     * round's reward pool, and opens the next round unless the task converged or ran its rounds.
     * @dev Requires every submission of the round to have a verdict. With no accepted update the
     * global model is unchanged and `modelHash` must equal it.
     * @param taskId The task.
     * @param modelHash keccak256 of the new global model's canonical bytes.
     * @param modelURI Where those bytes can be fetched.
     * @param globalAccuracyBp The new global model's accuracy on the round's test groups.
     */
    function aggregate(uint256 taskId, bytes32 modelHash, string calldata modelURI, uint16 globalAccuracyBp)
        external
        known(taskId)
        onlyOracle(taskId)
    {
        TaskState storage s = _states[taskId];
        if (s.phase != Phase.Closed) revert FLTaskWrongPhase(taskId, s.phase, Phase.Closed);
        uint16 round = s.round;
        RoundRecord storage rec = _rounds[taskId][round];
        if (!rec.disclosed) revert FLTaskNotDisclosed(taskId, round);
        if (s.verdicts != s.submissions) revert FLTaskVerdictsPending(s.verdicts, s.submissions);
        if (modelHash == bytes32(0)) revert FLTaskInvalidParameter("modelHash");
        if (globalAccuracyBp > MAX_BP) revert FLTaskInvalidParameter("globalAccuracyBp");
        TaskConfig storage c = _configs[taskId];
        if (s.accepted == 0 && modelHash != c.globalModelHash) revert FLTaskInvalidParameter("modelHash");

        uint128 perAccepted = _settle(taskId, s, rec);
        rec.globalModelHash = modelHash;
        rec.globalAccuracyBp = globalAccuracyBp;
        c.globalModelHash = modelHash;
        emit GlobalModelUpdated(taskId, round, modelHash, modelURI, s.accepted, globalAccuracyBp, perAccepted);

        bool converged = c.targetAccuracyBp != 0 && globalAccuracyBp >= c.targetAccuracyBp;
        if (converged || round >= c.maxRounds) {
            s.phase = Phase.AwaitingFinalize;
            s.deadline = uint64(block.timestamp) + c.evaluationWindow;
        } else {
            _openRound(taskId, round + 1, modelHash, modelURI);
        }
    }

    /**
     * @notice Finalizes a converged (or last-round) task and posts the final evaluation report (the
     * paper's `finalize_contract` and `post_evaluation`). Unallocated escrow becomes refundable.
     * @param taskId The task.
     * @param finalAccuracyBp Final global accuracy.
     * @param reportHash keccak256 of the evaluation report's bytes.
     * @param reportURI Where the report can be fetched.
     */
    function finalize(uint256 taskId, uint16 finalAccuracyBp, bytes32 reportHash, string calldata reportURI)
        external
        known(taskId)
        onlyOracle(taskId)
    {
        TaskState storage s = _states[taskId];
        if (s.phase != Phase.AwaitingFinalize) revert FLTaskWrongPhase(taskId, s.phase, Phase.AwaitingFinalize);
        if (finalAccuracyBp > MAX_BP) revert FLTaskInvalidParameter("finalAccuracyBp");
        s.phase = Phase.Finalized;
        emit TaskFinalized(taskId, s.round, finalAccuracyBp, reportHash, reportURI);
    }

    // ------------------------------------------------------------------------------------------------
    // Timeouts and money out (pull payments)
    // ------------------------------------------------------------------------------------------------

    /**
     * @notice Cancels a task whose oracle or publisher missed a deadline, or (publisher only) a task
     * nobody has submitted to yet. A closed round with verdicts is settled with the accepted
     * submissions it has; everything not allocated becomes refundable to the publisher.
     * @param taskId The task.
     */
    function cancel(uint256 taskId) external known(taskId) {
        TaskState storage s = _states[taskId];
        Phase phase = s.phase;
        bool late = block.timestamp > s.deadline;
        bool byPublisher = msg.sender == _configs[taskId].publisher;
        if (phase == Phase.Open) {
            // An open round past its deadline is closed, not cancelled; the publisher may withdraw
            // a task before its first submission.
            if (!(byPublisher && s.round == 1 && s.submissions == 0)) revert FLTaskCannotCancel(taskId, phase);
        } else if (phase == Phase.Closed) {
            if (!late) revert FLTaskDeadlineNotReached(taskId, s.deadline);
            RoundRecord storage rec = _rounds[taskId][s.round];
            _settle(taskId, s, rec);
        } else if (phase == Phase.AwaitingFinalize) {
            if (!late) revert FLTaskDeadlineNotReached(taskId, s.deadline);
        } else {
            revert FLTaskCannotCancel(taskId, phase);
        }
        s.phase = Phase.Cancelled;
        emit TaskCancelled(taskId, s.round, phase, msg.sender);
    }

    /**
     * @notice Pays a device's reward for an accepted submission of a settled round to the payee it
     * named. Anyone may trigger it; the money always goes to the recorded payee.
     * @param taskId The task.
     * @param round The round.
     * @param device The device that submitted.
     */
    function claim(uint256 taskId, uint16 round, address device) external nonReentrant known(taskId) {
        RoundRecord storage rec = _rounds[taskId][round];
        if (!rec.settled) revert FLTaskRoundNotSettled(taskId, round);
        Verdict storage v = _verdicts[taskId][round][device];
        uint256 amount = rec.rewardPerAccepted;
        if (v.status != Status.Accepted || amount == 0) revert FLTaskNothingToClaim(taskId, round, device);
        v.status = Status.Claimed;
        address payee = v.payee;
        emit RewardClaimed(taskId, round, device, payee, amount);
        Address.sendValue(payable(payee), amount);
    }

    /**
     * @notice Returns the escrow no settled round allocated to the publisher, once the task is
     * finalized or cancelled. Anyone may trigger it; the money always goes to the publisher.
     * @param taskId The task.
     */
    function refund(uint256 taskId) external nonReentrant known(taskId) {
        Phase phase = _states[taskId].phase;
        if (phase != Phase.Finalized && phase != Phase.Cancelled) {
            revert FLTaskWrongPhase(taskId, phase, Phase.Finalized);
        }
        TaskConfig storage c = _configs[taskId];
        uint256 amount = c.reward - c.allocated - c.refunded;
        if (amount == 0) revert FLTaskNothingToRefund(taskId);
        c.refunded += amount;
        address publisher = c.publisher;
        emit Refunded(taskId, publisher, amount);
        Address.sendValue(payable(publisher), amount);
    }

    // ------------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------------

    /// @notice Number of tasks published so far (task ids run from 1 to this).
    function taskCount() external view returns (uint256) {
        return _taskCount;
    }

    /// @notice A task's configuration and money accounting.
    function getTask(uint256 taskId) external view returns (TaskConfig memory) {
        return _configs[taskId];
    }

    /// @notice A task's live state: phase, round, threshold, counters and the current deadline.
    function getState(uint256 taskId) external view returns (TaskState memory) {
        return _states[taskId];
    }

    /// @notice What is recorded about one round.
    function getRound(uint256 taskId, uint16 round) external view returns (RoundRecord memory) {
        return _rounds[taskId][round];
    }

    /// @notice The commitment a device submitted in a round (zero if none).
    function getCommitment(uint256 taskId, uint16 round, address device) external view returns (bytes32) {
        return _commitments[taskId][round][device];
    }

    /// @notice The verdict on a device's submission in a round.
    function getVerdict(uint256 taskId, uint16 round, address device) external view returns (Verdict memory) {
        return _verdicts[taskId][round][device];
    }

    /// @notice Whether a device is on a task's allowlist.
    function isAllowlisted(uint256 taskId, address device) external view returns (bool) {
        return _allowed[taskId][device];
    }

    /// @notice Wei the device can claim for a round right now.
    function claimable(uint256 taskId, uint16 round, address device) external view returns (uint256) {
        RoundRecord storage rec = _rounds[taskId][round];
        if (!rec.settled || _verdicts[taskId][round][device].status != Status.Accepted) return 0;
        return rec.rewardPerAccepted;
    }

    /// @notice Wei the publisher can have refunded right now.
    function refundable(uint256 taskId) external view returns (uint256) {
        Phase phase = _states[taskId].phase;
        if (phase != Phase.Finalized && phase != Phase.Cancelled) return 0;
        TaskConfig storage c = _configs[taskId];
        return c.reward - c.allocated - c.refunded;
    }

    /// @notice The commitment stored for a submission.
    function submissionCommitment(bytes32 modelHash, address payee, uint16 thresholdBp, uint32 numSamples)
        external
        pure
        returns (bytes32)
    {
        return _commitment(modelHash, payee, thresholdBp, numSamples);
    }

    /// @notice The Merkle leaf committing test-data group `index`.
    function testGroupLeaf(uint32 index, bytes32 salt, bytes32 groupHash) public pure returns (bytes32) {
        return keccak256(abi.encode(index, salt, groupHash));
    }

    /**
     * @notice Position `index` of the seed's permutation of `count` items: the swap-or-not shuffle
     * of the Ethereum consensus spec (`compute_shuffled_index`), so group assignments are fixed by
     * the committed seed and cheap to verify for any single slot.
     */
    function shuffledIndex(uint256 index, uint256 count, bytes32 seed) public pure returns (uint256) {
        if (count == 0 || index >= count) revert FLTaskInvalidParameter("index");
        if (count > type(uint32).max) revert FLTaskInvalidParameter("count");
        // Scratch memory past the free-memory pointer (never allocated, so memory-safe):
        // [seed (32) | round (1) | uint32le(position / 256) (4)].
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, seed)
            for { let r := 0 } lt(r, 90) { r := add(r, 1) } { // 90 = SHUFFLE_ROUNDS
                mstore8(add(ptr, 32), r)
                // pivot = uint64 little-endian of the first 8 bytes of keccak256(seed ++ r), mod count
                let v := shr(192, keccak256(ptr, 33))
                v := or(shl(8, and(v, 0x00FF00FF00FF00FF)), and(shr(8, v), 0x00FF00FF00FF00FF))
                v := or(shl(16, and(v, 0x0000FFFF0000FFFF)), and(shr(16, v), 0x0000FFFF0000FFFF))
                v := and(or(shl(32, v), shr(32, v)), 0xFFFFFFFFFFFFFFFF)
                // count < 2^32, so these sums cannot wrap
                let flip := mod(sub(add(mod(v, count), count), index), count)
                let position := index
                if gt(flip, index) { position := flip }
                let q := shr(8, position)
                mstore8(add(ptr, 33), and(q, 0xFF))
                mstore8(add(ptr, 34), and(shr(8, q), 0xFF))
                mstore8(add(ptr, 35), and(shr(16, q), 0xFF))
                mstore8(add(ptr, 36), and(shr(24, q), 0xFF))
                let source := keccak256(ptr, 37)
                // bit (position % 8) of byte ((position % 256) / 8) of source
                if and(shr(and(position, 7), byte(shr(3, and(position, 0xFF)), source)), 1) { index := flip }
            }
        }
        return index;
    }

    // ------------------------------------------------------------------------------------------------
    // Internals
    // ------------------------------------------------------------------------------------------------

    function _commitment(bytes32 modelHash, address payee, uint16 thresholdBp, uint32 numSamples)
        private
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(modelHash, payee, thresholdBp, numSamples));
    }

    function _openRound(uint256 taskId, uint16 round, bytes32 modelHash, string memory modelURI) private {
        TaskState storage s = _states[taskId];
        uint64 deadline = uint64(block.timestamp) + _configs[taskId].roundDuration;
        s.phase = Phase.Open;
        s.round = round;
        s.submissions = 0;
        s.verdicts = 0;
        s.accepted = 0;
        s.deadline = deadline;
        emit RoundOpened(taskId, round, modelHash, modelURI, deadline);
    }

    function _close(uint256 taskId, TaskState storage s) private {
        uint64 deadline = uint64(block.timestamp) + _configs[taskId].evaluationWindow;
        s.phase = Phase.Closed;
        s.deadline = deadline;
        RoundRecord storage rec = _rounds[taskId][s.round];
        rec.submissions = s.submissions;
        emit SubmissionsClosed(taskId, s.round, s.submissions, deadline);
    }

    /// @dev Reverts unless `g` is the leaf the seed assigns to `slot` and its proof holds.
    function _verifyGroup(TestGroup calldata g, uint256 slot, uint32 numGroups, bytes32 seed, bytes32 root)
        private
        pure
    {
        uint32 expected = uint32(shuffledIndex(slot, numGroups, seed));
        if (g.index != expected) revert FLTaskWrongGroup(expected, g.index);
        bytes32 leaf = testGroupLeaf(g.index, g.salt, g.groupHash);
        if (!MerkleProof.verifyCalldata(g.proof, root, leaf)) revert FLTaskInvalidGroupProof(g.index);
    }

    /// @dev Fixes the round's reward per accepted submission and allocates it from the escrow.
    function _settle(uint256 taskId, TaskState storage s, RoundRecord storage rec) private returns (uint128) {
        TaskConfig storage c = _configs[taskId];
        uint32 accepted = s.accepted;
        uint16 maxRounds = c.maxRounds;
        uint256 pool = c.reward / maxRounds;
        // The last round also takes the rounding remainder, so the pools add up to the reward.
        if (s.round == maxRounds) pool += c.reward % maxRounds;
        uint128 perAccepted = accepted == 0 ? 0 : uint128(pool / accepted);
        rec.accepted = accepted;
        rec.rewardPerAccepted = perAccepted;
        rec.settled = true;
        c.allocated += uint256(perAccepted) * accepted;
        return perAccepted;
    }
}
