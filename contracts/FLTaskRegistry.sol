// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {IFLTaskRegistry} from "./IFLTaskRegistry.sol";

/**
 * @title FLTaskRegistry
 * @notice The on-chain half of a secure federated-learning marketplace (after Liu et al., "A Secure
 * Federated Learning Framework for 5G Networks", 2020). A publisher escrows an ETH reward and commits
 * to a hidden test set; devices submit commitments to noisy model updates (the weights stay off-chain,
 * content-addressed); an oracle posts a verdict per submission, aggregates the accepted ones and
 * commits the next global model; accepted devices pull their share of the reward.
 *
 * @dev The types, events, errors, reason codes and the task life cycle are declared and documented
 * in {IFLTaskRegistry}; this contract implements them.
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
 */
contract FLTaskRegistry is IFLTaskRegistry {
    // ------------------------------------------------------------------------------------------------
    // Constants (reason codes: the table in {IFLTaskRegistry}'s `@custom:reason-codes`)
    // ------------------------------------------------------------------------------------------------

    /// @inheritdoc IFLTaskRegistry
    uint8 public constant REASON_OK = 0;
    /// @inheritdoc IFLTaskRegistry
    uint8 public constant REASON_BELOW_THRESHOLD = 1;
    /// @inheritdoc IFLTaskRegistry
    uint8 public constant REASON_MAX = 11;
    /// @dev Reason code LOSS_ABOVE_MARGIN: only for tasks with a loss gate.
    uint8 private constant _REASON_LOSS_ABOVE_MARGIN = 11;
    /// @inheritdoc IFLTaskRegistry
    uint16 public constant MAX_BP = 10_000;
    /// @inheritdoc IFLTaskRegistry
    uint8 public constant PRIVACY_MODE_MAX = 2;
    /// @inheritdoc IFLTaskRegistry
    uint8 public constant AGGREGATION_RULE_MAX = 4;
    /// @inheritdoc IFLTaskRegistry
    uint8 public constant SHUFFLE_ROUNDS = 90;
    /// @dev Clears a commitment's top byte, where a packed verdict keeps its (non-zero) status.
    bytes32 private constant _COMMITMENT_MASK = bytes32(type(uint256).max >> 8);

    // ------------------------------------------------------------------------------------------------
    // Storage (private, with getters below)
    // ------------------------------------------------------------------------------------------------

    uint256 private _taskCount;
    mapping(uint256 taskId => TaskConfig) private _configs;
    mapping(uint256 taskId => TaskState) private _states;
    mapping(uint256 taskId => mapping(uint16 round => RoundRecord)) private _rounds;
    /// @dev One slot per submission. Before its verdict: the commitment, top byte zero
    /// ({submissionCommitment}). After: the verdict packed as status (bits 248-255, non-zero),
    /// reason (240-247), accuracyBp (224-239) and payee (0-159); see {_pack} and {_unpack}.
    mapping(uint256 taskId => mapping(uint16 round => mapping(address device => bytes32))) private _slots;
    mapping(uint256 taskId => mapping(address device => bool)) private _allowed;

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

    /// @inheritdoc IFLTaskRegistry
    function publish(TaskParams calldata p) external payable returns (uint256 taskId) {
        if (msg.value == 0) revert FLTaskNoReward();
        // Per-submission rewards are stored as uint128; no real escrow comes near this bound.
        if (msg.value > type(uint128).max) revert FLTaskInvalidParameter("reward");
        _checkParams(p);

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
        c.privacyMode = p.privacyMode;
        c.aggregationRule = p.aggregationRule;
        c.aggregationParam = p.aggregationParam;
        c.aggregationParam2 = p.aggregationParam2;
        c.lossMarginBp = p.lossMarginBp;
        c.claimWindow = p.claimWindow;
        if (p.rootSetHash != bytes32(0)) c.rootSetHash = p.rootSetHash;
        TaskState storage s = _states[taskId];
        s.thresholdBp = p.thresholdBp;
        s.allowlistOnly = p.allowlistOnly;
        s.maxSubmissions = p.maxSubmissionsPerRound;
        s.maxSamples = p.maxSamplesPerDevice;
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
        _openRound(taskId, 1, p.initialModelHash, p.initialModelURI, bytes32(0));
    }

    /// @inheritdoc IFLTaskRegistry
    function setAllowlist(uint256 taskId, address[] calldata devices, bool allowed) external known(taskId) {
        if (msg.sender != _configs[taskId].publisher) revert FLTaskUnauthorized(msg.sender);
        for (uint256 i = 0; i < devices.length; ++i) {
            _allowed[taskId][devices[i]] = allowed;
            emit AllowlistUpdated(taskId, devices[i], allowed);
        }
    }

    /// @inheritdoc IFLTaskRegistry
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

    /// @inheritdoc IFLTaskRegistry
    function submit(
        uint256 taskId,
        bytes32 modelHash,
        string calldata modelURI,
        address payee,
        uint32 numSamples,
        uint16 maxThresholdBp,
        uint32 epsilonSpentMilli
    ) external {
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
        if (numSamples == 0 || numSamples > st.maxSamples) revert FLTaskInvalidParameter("numSamples");
        if (st.thresholdBp > maxThresholdBp) revert FLTaskThresholdAboveLimit(st.thresholdBp, maxThresholdBp);
        if (st.maxSubmissions != 0 && st.submissions >= st.maxSubmissions) {
            revert FLTaskRoundFull(taskId, st.round, st.maxSubmissions);
        }
        mapping(address device => bytes32) storage slots = _slots[taskId][st.round];
        if (slots[msg.sender] != bytes32(0)) revert FLTaskDuplicateSubmission(taskId, st.round, msg.sender);

        slots[msg.sender] = _commitment(modelHash, payee, st.thresholdBp, numSamples);
        s.submissions = st.submissions + 1;
        emit ModelSubmitted(
            taskId, st.round, msg.sender, payee, modelHash, modelURI, st.thresholdBp, numSamples, epsilonSpentMilli
        );
    }

    // ------------------------------------------------------------------------------------------------
    // Round driving: close, disclose (disclosure_test_data), verdicts (evaluate_local_model)
    // ------------------------------------------------------------------------------------------------

    /// @inheritdoc IFLTaskRegistry
    function closeSubmissions(uint256 taskId) external known(taskId) {
        TaskState storage s = _states[taskId];
        if (s.phase != Phase.Open) revert FLTaskWrongPhase(taskId, s.phase, Phase.Open);
        bool full = s.maxSubmissions != 0 && s.submissions >= s.maxSubmissions;
        if (!full && msg.sender != _configs[taskId].oracle && block.timestamp <= s.deadline) {
            revert FLTaskDeadlineNotReached(taskId, s.deadline);
        }
        _close(taskId, s);
    }

    /// @inheritdoc IFLTaskRegistry
    function setSealKey(uint256 taskId, bytes32 sealKey) external known(taskId) onlyOracle(taskId) {
        TaskState storage s = _states[taskId];
        if (s.phase != Phase.Open) revert FLTaskWrongPhase(taskId, s.phase, Phase.Open);
        if (sealKey == bytes32(0)) revert FLTaskInvalidParameter("sealKey");
        uint16 round = s.round;
        RoundRecord storage rec = _rounds[taskId][round];
        if (rec.sealKey != bytes32(0)) revert FLTaskSealKeyAlreadySet(taskId, round);
        rec.sealKey = sealKey;
        emit SealKeySet(taskId, round, sealKey);
    }

    /// @inheritdoc IFLTaskRegistry
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

    /// @inheritdoc IFLTaskRegistry
    function postVerdict(
        uint256 taskId,
        address device,
        Submission calldata sub,
        uint16 accuracyBp,
        uint8 reason,
        bytes32 evaluatorHash
    ) external known(taskId) onlyOracle(taskId) {
        TaskState storage s = _states[taskId];
        uint16 round = _checkVerdictPhase(taskId, s);
        bool accepted = _recordVerdict(taskId, round, device, sub, accuracyBp, reason, evaluatorHash);
        ++s.verdicts;
        if (accepted) ++s.accepted;
    }

    /// @inheritdoc IFLTaskRegistry
    function postVerdicts(uint256 taskId, VerdictInput[] calldata verdicts, bytes32 evaluatorHash)
        external
        known(taskId)
        onlyOracle(taskId)
    {
        TaskState storage s = _states[taskId];
        uint16 round = _checkVerdictPhase(taskId, s);
        uint32 accepted = 0;
        uint256 n = verdicts.length;
        for (uint256 i = 0; i < n; ++i) {
            VerdictInput calldata v = verdicts[i];
            if (_recordVerdict(taskId, round, v.device, v.sub, v.accuracyBp, v.reason, evaluatorHash)) ++accepted;
        }
        // n <= submissions < 2^32: a batch can hold each submission at most once (a repeat reverts).
        s.verdicts += uint32(n);
        s.accepted += accepted;
    }

    // ------------------------------------------------------------------------------------------------
    // Oracle: aggregate_model_update + evaluate_model, finalize_contract + post_evaluation
    // ------------------------------------------------------------------------------------------------

    /// @inheritdoc IFLTaskRegistry
    function aggregate(
        uint256 taskId,
        bytes32 modelHash,
        string calldata modelURI,
        uint16 globalAccuracyBp,
        bytes32 sealSecret,
        bytes32 nextSealKey
    ) external known(taskId) onlyOracle(taskId) {
        if (sealSecret == bytes32(0)) revert FLTaskInvalidParameter("sealSecret");
        uint16 round = _settleAggregate(taskId, modelHash, modelURI, globalAccuracyBp);
        emit SealKeyDisclosed(taskId, round, sealSecret);

        TaskConfig storage c = _configs[taskId];
        bool converged = c.targetAccuracyBp != 0 && globalAccuracyBp >= c.targetAccuracyBp;
        if (converged || round >= c.maxRounds) {
            TaskState storage s = _states[taskId];
            s.phase = Phase.AwaitingFinalize;
            s.deadline = uint40(block.timestamp) + c.evaluationWindow;
        } else {
            _openRound(taskId, round + 1, modelHash, modelURI, nextSealKey);
        }
    }

    /// @inheritdoc IFLTaskRegistry
    function finalize(uint256 taskId, uint16 finalAccuracyBp, bytes32 reportHash, string calldata reportURI)
        external
        known(taskId)
        onlyOracle(taskId)
    {
        TaskState storage s = _states[taskId];
        if (s.phase != Phase.AwaitingFinalize) revert FLTaskWrongPhase(taskId, s.phase, Phase.AwaitingFinalize);
        if (finalAccuracyBp > MAX_BP) revert FLTaskInvalidParameter("finalAccuracyBp");
        s.phase = Phase.Finalized;
        s.deadline = uint40(block.timestamp) + _configs[taskId].claimWindow;
        emit TaskFinalized(taskId, s.round, finalAccuracyBp, reportHash, reportURI);
    }

    // ------------------------------------------------------------------------------------------------
    // Timeouts and money out (pull payments)
    // ------------------------------------------------------------------------------------------------

    /// @inheritdoc IFLTaskRegistry
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
            // The stall rule: submissions still without a verdict count in the division (and their
            // shares stay refundable), so selective verdicts cannot concentrate the pool.
            _settle(taskId, s, rec, s.submissions - s.verdicts);
        } else if (phase == Phase.AwaitingFinalize) {
            if (!late) revert FLTaskDeadlineNotReached(taskId, s.deadline);
        } else {
            revert FLTaskCannotCancel(taskId, phase);
        }
        s.phase = Phase.Cancelled;
        s.deadline = uint40(block.timestamp) + _configs[taskId].claimWindow;
        emit TaskCancelled(taskId, s.round, phase, msg.sender);
    }

    /// @inheritdoc IFLTaskRegistry
    function claim(uint256 taskId, uint16 round, address device) external {
        // No reentrancy guard: the share is marked claimed before the transfer (checks-effects-
        // interactions), and no other state is written after it.
        _checkClaimWindow(taskId);
        (address payee, uint256 amount) = _takeShare(taskId, round, device);
        Address.sendValue(payable(payee), amount);
    }

    /// @inheritdoc IFLTaskRegistry
    function claimMany(uint256 taskId, uint16[] calldata rounds, address device) external {
        _checkClaimWindow(taskId);
        uint256 n = rounds.length;
        // Effects first: every share is marked claimed, consecutive shares of one payee summed ...
        address[] memory payees = new address[](n);
        uint256[] memory owed = new uint256[](n);
        uint256 transfers = 0;
        for (uint256 i = 0; i < n; ++i) {
            (address payee, uint256 amount) = _takeShare(taskId, rounds[i], device);
            if (transfers == 0 || payees[transfers - 1] != payee) {
                payees[transfers] = payee;
                ++transfers;
            }
            owed[transfers - 1] += amount;
        }
        // ... then the interactions, with nothing written after them.
        for (uint256 k = 0; k < transfers; ++k) {
            Address.sendValue(payable(payees[k]), owed[k]);
        }
    }

    /// @inheritdoc IFLTaskRegistry
    function setPayee(uint256 taskId, uint16 round, address newPayee) external {
        if (newPayee == address(0)) revert FLTaskInvalidParameter("newPayee");
        _checkClaimWindow(taskId);
        bytes32 packed = _slots[taskId][round][msg.sender];
        Verdict memory v = _unpack(packed);
        if (v.status != Status.Accepted) revert FLTaskNothingToClaim(taskId, round, msg.sender);
        address previous = v.payee;
        v.payee = newPayee;
        _slots[taskId][round][msg.sender] = _pack(v);
        emit PayeeChanged(taskId, round, msg.sender, previous, newPayee);
    }

    /// @inheritdoc IFLTaskRegistry
    function reclaimExpired(uint256 taskId, uint16 round, address[] calldata devices) external known(taskId) {
        TaskState storage s = _states[taskId];
        bool ended = s.phase == Phase.Finalized || s.phase == Phase.Cancelled;
        if (!ended || block.timestamp <= s.deadline) revert FLTaskClaimWindowOpen(taskId, ended ? s.deadline : 0);
        uint256 amount = _rounds[taskId][round].rewardPerAccepted;
        for (uint256 i = 0; i < devices.length; ++i) {
            _expire(taskId, round, devices[i], amount);
        }
        _configs[taskId].allocated -= amount * devices.length;
    }

    /// @inheritdoc IFLTaskRegistry
    function refund(uint256 taskId) external known(taskId) {
        // Checks-effects-interactions: `refunded` grows before the transfer (no reentrancy guard).
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

    /// @inheritdoc IFLTaskRegistry
    function taskCount() external view returns (uint256) {
        return _taskCount;
    }

    /// @inheritdoc IFLTaskRegistry
    function getTask(uint256 taskId) external view returns (TaskConfig memory) {
        return _configs[taskId];
    }

    /// @inheritdoc IFLTaskRegistry
    function getState(uint256 taskId) external view returns (TaskState memory) {
        return _states[taskId];
    }

    /// @inheritdoc IFLTaskRegistry
    function getRound(uint256 taskId, uint16 round) external view returns (RoundRecord memory) {
        return _rounds[taskId][round];
    }

    /// @inheritdoc IFLTaskRegistry
    function getCommitment(uint256 taskId, uint16 round, address device) external view returns (bytes32) {
        bytes32 slot = _slots[taskId][round][device];
        return _isVerdict(slot) ? bytes32(0) : slot;
    }

    /// @inheritdoc IFLTaskRegistry
    function getVerdict(uint256 taskId, uint16 round, address device) external view returns (Verdict memory) {
        return _unpack(_slots[taskId][round][device]);
    }

    /// @inheritdoc IFLTaskRegistry
    function isAllowlisted(uint256 taskId, address device) external view returns (bool) {
        return _allowed[taskId][device];
    }

    /// @inheritdoc IFLTaskRegistry
    function claimable(uint256 taskId, uint16 round, address device) external view returns (uint256) {
        RoundRecord storage rec = _rounds[taskId][round];
        if (!rec.settled || _unpack(_slots[taskId][round][device]).status != Status.Accepted) return 0;
        TaskState storage s = _states[taskId];
        bool ended = s.phase == Phase.Finalized || s.phase == Phase.Cancelled;
        if (ended && block.timestamp > s.deadline) return 0;
        return rec.rewardPerAccepted;
    }

    /// @inheritdoc IFLTaskRegistry
    function refundable(uint256 taskId) external view returns (uint256) {
        Phase phase = _states[taskId].phase;
        if (phase != Phase.Finalized && phase != Phase.Cancelled) return 0;
        TaskConfig storage c = _configs[taskId];
        return c.reward - c.allocated - c.refunded;
    }

    /// @inheritdoc IFLTaskRegistry
    function submissionCommitment(bytes32 modelHash, address payee, uint16 thresholdBp, uint32 numSamples)
        external
        pure
        returns (bytes32)
    {
        return _commitment(modelHash, payee, thresholdBp, numSamples);
    }

    /// @inheritdoc IFLTaskRegistry
    function testGroupLeaf(uint32 index, bytes32 salt, bytes32 groupHash) public pure returns (bytes32) {
        return keccak256(abi.encode(index, salt, groupHash));
    }

    /// @inheritdoc IFLTaskRegistry
    function shuffledIndex(uint256 index, uint256 count, bytes32 seed) public pure returns (uint256) {
        if (count == 0 || index >= count) revert FLTaskInvalidParameter("index");
        if (count > type(uint32).max) revert FLTaskInvalidParameter("count");
        // Scratch memory past the free-memory pointer (never allocated, so memory-safe):
        // [seed (32) | round (1) | uint32le(position / 256) (4)].
        // In assembly a disclosure costs ~3.5x less than with the Solidity loop (docs/contract.md, Gas).
        // solhint-disable-next-line no-inline-assembly
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
        // The top byte is cleared so that a commitment never reads as a packed verdict.
        return keccak256(abi.encode(modelHash, payee, thresholdBp, numSamples)) & _COMMITMENT_MASK;
    }

    /// @dev Whether a submission slot holds a verdict (its status byte is set) rather than a commitment.
    function _isVerdict(bytes32 slot) private pure returns (bool) {
        return uint256(slot) >> 248 != 0;
    }

    function _pack(Verdict memory v) private pure returns (bytes32) {
        return bytes32(
            (uint256(uint8(v.status)) << 248) | (uint256(v.reason) << 240) | (uint256(v.accuracyBp) << 224)
                | uint256(uint160(v.payee))
        );
    }

    /// @dev A slot without a verdict (empty, or a commitment) reads as status None.
    function _unpack(bytes32 slot) private pure returns (Verdict memory v) {
        uint256 w = uint256(slot);
        if (w >> 248 == 0) return v;
        v.status = Status(uint8(w >> 248));
        v.reason = uint8(w >> 240);
        v.accuracyBp = uint16(w >> 224);
        v.payee = address(uint160(w));
    }

    /// @dev Reverts for an unknown task and once the task has ended and its claim window has passed.
    function _checkClaimWindow(uint256 taskId) private view {
        TaskState storage s = _states[taskId];
        Phase phase = s.phase;
        // An enum tag, not a balance or a time: slither's strict-equality warning does not apply.
        // slither-disable-next-line incorrect-equality
        if (phase == Phase.None) revert FLTaskUnknown(taskId);
        if ((phase == Phase.Finalized || phase == Phase.Cancelled) && block.timestamp > s.deadline) {
            revert FLTaskClaimWindowClosed(taskId, s.deadline);
        }
    }

    /// @dev {claim}'s checks and effects for one round: marks the share claimed and returns it.
    function _takeShare(uint256 taskId, uint16 round, address device) private returns (address payee, uint256 amount) {
        RoundRecord storage rec = _rounds[taskId][round];
        if (!rec.settled) revert FLTaskRoundNotSettled(taskId, round);
        bytes32 packed = _slots[taskId][round][device];
        Verdict memory v = _unpack(packed);
        amount = rec.rewardPerAccepted;
        if (v.status != Status.Accepted || amount == 0) revert FLTaskNothingToClaim(taskId, round, device);
        v.status = Status.Claimed;
        _slots[taskId][round][device] = _pack(v);
        payee = v.payee;
        emit RewardClaimed(taskId, round, device, payee, amount);
    }

    /// @dev Marks one accepted, unclaimed share of `amount` wei expired.
    function _expire(uint256 taskId, uint16 round, address device, uint256 amount) private {
        Verdict memory v = _unpack(_slots[taskId][round][device]);
        if (v.status != Status.Accepted || amount == 0) revert FLTaskNothingToClaim(taskId, round, device);
        v.status = Status.Expired;
        _slots[taskId][round][device] = _pack(v);
        emit RewardExpired(taskId, round, device, amount);
    }

    /// @dev The phase checks {postVerdict} and {postVerdicts} share; returns the closed round.
    function _checkVerdictPhase(uint256 taskId, TaskState storage s) private view returns (uint16 round) {
        if (s.phase != Phase.Closed) revert FLTaskWrongPhase(taskId, s.phase, Phase.Closed);
        round = s.round;
        if (!_rounds[taskId][round].disclosed) revert FLTaskNotDisclosed(taskId, round);
    }

    /// @dev Checks one verdict against the device's commitment and writes it over it; returns
    /// whether it is accepted. The caller updates the task's counters.
    function _recordVerdict(
        uint256 taskId,
        uint16 round,
        address device,
        Submission calldata sub,
        uint16 accuracyBp,
        uint8 reason,
        bytes32 evaluatorHash
    ) private returns (bool accepted) {
        mapping(address device => bytes32) storage slots = _slots[taskId][round];
        bytes32 stored = slots[device];
        if (stored == bytes32(0)) revert FLTaskNoSubmission(taskId, round, device);
        if (_isVerdict(stored)) revert FLTaskVerdictAlreadyPosted(taskId, round, device);
        if (stored != _commitment(sub.modelHash, sub.payee, sub.thresholdBp, sub.numSamples)) {
            revert FLTaskCommitmentMismatch(taskId, round, device);
        }
        if (accuracyBp > MAX_BP || reason > REASON_MAX) revert FLTaskInvalidVerdict(accuracyBp, reason);
        // A "below threshold" verdict must be: it would otherwise reject a model that qualified.
        if (reason == REASON_BELOW_THRESHOLD && accuracyBp >= sub.thresholdBp) {
            revert FLTaskInvalidVerdict(accuracyBp, reason);
        }
        // The loss gate exists only where the task declared one.
        if (reason == _REASON_LOSS_ABOVE_MARGIN && _configs[taskId].lossMarginBp == 0) {
            revert FLTaskInvalidVerdict(accuracyBp, reason);
        }

        if (reason == REASON_OK && accuracyBp < sub.thresholdBp) reason = REASON_BELOW_THRESHOLD;
        accepted = reason == REASON_OK;
        slots[device] = _pack(
            Verdict({
                payee: sub.payee,
                accuracyBp: accuracyBp,
                reason: reason,
                status: accepted ? Status.Accepted : Status.Rejected
            })
        );
        emit VerdictPosted(taskId, round, device, sub.modelHash, accuracyBp, reason, accepted, evaluatorHash);
    }

    /// @dev Reverts with {FLTaskInvalidParameter} naming the first field of `p` that is out of range.
    function _checkParams(TaskParams calldata p) private pure {
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
        if (p.maxSamplesPerDevice == 0) revert FLTaskInvalidParameter("maxSamplesPerDevice");
        if (p.privacyMode > PRIVACY_MODE_MAX) revert FLTaskInvalidParameter("privacyMode");
        if (p.claimWindow == 0) revert FLTaskInvalidParameter("claimWindow");
        if (p.lossMarginBp > MAX_BP) revert FLTaskInvalidParameter("lossMarginBp");
        _checkRule(p);
    }

    /// @dev The table of `@custom:aggregation-rules`: each rule's parameters and root set.
    function _checkRule(TaskParams calldata p) private pure {
        uint8 rule = p.aggregationRule;
        if (rule > AGGREGATION_RULE_MAX) revert FLTaskInvalidParameter("aggregationRule");
        bool a = rule == 2 || rule == 3; // trimmed_mean and multi_krum take a first parameter
        bool b = rule == 3; // multi_krum takes a second one
        if (!a && p.aggregationParam != 0) revert FLTaskInvalidParameter("aggregationParam");
        if (!b && p.aggregationParam2 != 0) revert FLTaskInvalidParameter("aggregationParam2");
        if (rule == 2 && (p.aggregationParam == 0 || p.aggregationParam >= MAX_BP / 2)) {
            revert FLTaskInvalidParameter("aggregationParam");
        }
        if ((rule == 4) != (p.rootSetHash != bytes32(0))) revert FLTaskInvalidParameter("rootSetHash");
    }

    /// @dev Opens `round` from the global model `modelHash`; a non-zero `sealKey` keys it at once.
    function _openRound(uint256 taskId, uint16 round, bytes32 modelHash, string memory modelURI, bytes32 sealKey)
        private
    {
        TaskState storage s = _states[taskId];
        uint40 deadline = uint40(block.timestamp) + _configs[taskId].roundDuration;
        s.phase = Phase.Open;
        s.round = round;
        s.submissions = 0;
        s.verdicts = 0;
        s.accepted = 0;
        s.deadline = deadline;
        emit RoundOpened(taskId, round, modelHash, modelURI, uint64(deadline));
        if (sealKey != bytes32(0)) {
            _rounds[taskId][round].sealKey = sealKey;
            emit SealKeySet(taskId, round, sealKey);
        }
    }

    function _close(uint256 taskId, TaskState storage s) private {
        uint40 deadline = uint40(block.timestamp) + _configs[taskId].evaluationWindow;
        s.phase = Phase.Closed;
        s.deadline = deadline;
        // The round record is written at settlement (by the oracle's aggregate or a cancel), not
        // here: the device whose submission reaches the cap pays no new storage slot.
        emit SubmissionsClosed(taskId, s.round, s.submissions, uint64(deadline));
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

    /// @dev {aggregate}'s checks and bookkeeping: settles the closed round, records its global model.
    function _settleAggregate(uint256 taskId, bytes32 modelHash, string calldata modelURI, uint16 globalAccuracyBp)
        private
        returns (uint16 round)
    {
        TaskState storage s = _states[taskId];
        if (s.phase != Phase.Closed) revert FLTaskWrongPhase(taskId, s.phase, Phase.Closed);
        round = s.round;
        RoundRecord storage rec = _rounds[taskId][round];
        if (!rec.disclosed) revert FLTaskNotDisclosed(taskId, round);
        if (s.verdicts != s.submissions) revert FLTaskVerdictsPending(s.verdicts, s.submissions);
        if (modelHash == bytes32(0)) revert FLTaskInvalidParameter("modelHash");
        if (globalAccuracyBp > MAX_BP) revert FLTaskInvalidParameter("globalAccuracyBp");
        TaskConfig storage c = _configs[taskId];
        if (s.accepted == 0 && modelHash != c.globalModelHash) revert FLTaskInvalidParameter("modelHash");

        uint128 perAccepted = _settle(taskId, s, rec, 0);
        rec.globalModelHash = modelHash;
        rec.globalAccuracyBp = globalAccuracyBp;
        c.globalModelHash = modelHash;
        emit GlobalModelUpdated(taskId, round, modelHash, modelURI, s.accepted, globalAccuracyBp, perAccepted);
    }

    /// @dev Fixes the round's reward per accepted submission and allocates it from the escrow.
    function _settle(uint256 taskId, TaskState storage s, RoundRecord storage rec, uint32 pending)
        private
        returns (uint128)
    {
        TaskConfig storage c = _configs[taskId];
        uint32 accepted = s.accepted;
        uint16 maxRounds = c.maxRounds;
        uint256 pool = c.reward / maxRounds;
        // The last round also takes the rounding remainder, so the pools add up to the reward.
        if (s.round == maxRounds) pool += c.reward % maxRounds;
        uint128 perAccepted = accepted == 0 ? 0 : uint128(pool / (uint256(accepted) + pending));
        rec.submissions = s.submissions;
        rec.accepted = accepted;
        rec.rewardPerAccepted = perAccepted;
        rec.settled = true;
        c.allocated += uint256(perAccepted) * accepted;
        return perAccepted;
    }
}
