// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

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

    Mode public mode;
    address public target;
    uint256 public taskId;
    uint16 public round;
    address public device;
    uint256 public received;

    /// @notice Sets what happens on the next ETH receipt and which claim/refund to re-enter.
    function configure(Mode mode_, address target_, uint256 taskId_, uint16 round_, address device_) external {
        mode = mode_;
        target = target_;
        taskId = taskId_;
        round = round_;
        device = device_;
    }

    /// @notice Calls `target_` (e.g. the registry's publish) as this contract, forwarding ETH.
    function execute(address target_, bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory ret) = target_.call{value: msg.value}(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 32), mload(ret))
            }
        }
        return ret;
    }

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
