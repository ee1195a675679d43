// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

// A test double has to do what the protocol's contracts must not: raw calls, re-raising their
// revert data, and re-entering the registry from receive().
// solhint-disable no-inline-assembly, avoid-low-level-calls, no-complex-fallback

/**
 * @title FLTestPayee
 * @notice Test double for FLTaskRegistry's money paths: a payee or publisher contract that accepts
 * ETH, rejects it, or re-enters the registry while receiving it. Not part of the protocol; only the
 * contract tests deploy it.
 */
contract FLTestPayee {
    enum Mode {
        Accept,
        Reject,
        ReenterClaim,
        ReenterRefund
    }

    error FLTestPayeeRejected();

    /// @notice What the next ETH receipt does.
    Mode public mode;
    /// @notice The registry to re-enter.
    address public target;
    /// @notice The task of the claim or refund to re-enter.
    uint256 public taskId;
    /// @notice The round of the claim to re-enter.
    uint16 public round;
    /// @notice The device of the claim to re-enter.
    address public device;
    /// @notice Wei received so far.
    uint256 public received;

    /**
     * @notice Sets what happens on the next ETH receipt and which claim/refund to re-enter.
     * @param mode_ What the next ETH receipt does.
     * @param target_ The registry to re-enter.
     * @param taskId_ The task of the claim or refund.
     * @param round_ The round of the claim.
     * @param device_ The device of the claim.
     */
    function configure(Mode mode_, address target_, uint256 taskId_, uint16 round_, address device_) external {
        mode = mode_;
        target = target_;
        taskId = taskId_;
        round = round_;
        device = device_;
    }

    /**
     * @notice Calls `target_` (e.g. the registry's publish) as this contract, forwarding ETH.
     * @param target_ The contract to call.
     * @param data The calldata.
     * @return The call's return data (its revert data is re-raised).
     */
    function execute(address target_, bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory ret) = target_.call{value: msg.value}(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 32), mload(ret))
            }
        }
        return ret;
    }

    /// @notice Accepts, rejects or re-enters, as configured.
    receive() external payable {
        if (mode == Mode.Reject) revert FLTestPayeeRejected();
        if (mode == Mode.ReenterClaim) {
            (bool ok, bytes memory ret) =
                target.call(abi.encodeWithSignature("claim(uint256,uint16,address)", taskId, round, device));
            if (!ok) {
                assembly ("memory-safe") {
                    revert(add(ret, 32), mload(ret))
                }
            }
        }
        if (mode == Mode.ReenterRefund) {
            (bool ok, bytes memory ret) = target.call(abi.encodeWithSignature("refund(uint256)", taskId));
            if (!ok) {
                assembly ("memory-safe") {
                    revert(add(ret, 32), mload(ret))
                }
            }
        }
        received += msg.value;
    }
}
