// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @notice The few forge cheatcodes these tests use (forge-std is not available from our registries).
interface Vm {
    function prank(address sender) external;
    function startPrank(address sender) external;
    function stopPrank() external;
    function warp(uint256 timestamp) external;
    function roll(uint256 blockNumber) external;
    function chainId(uint256 newChainId) external;
    function deal(address account, uint256 newBalance) external;
    function expectRevert() external;
    function expectRevert(bytes4 revertData) external;
    function expectRevert(bytes calldata revertData) external;
    function expectEmit() external;
    function expectEmit(address emitter) external;
    function expectEmit(bool checkTopic1, bool checkTopic2, bool checkTopic3, bool checkData) external;
    function expectEmit(bool checkTopic1, bool checkTopic2, bool checkTopic3, bool checkData, address emitter)
        external;
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function addr(uint256 privateKey) external pure returns (address);
    function assume(bool condition) external pure;
    function label(address account, string calldata newLabel) external;
    function exists(string calldata path) external view returns (bool);
    function readFileBinary(string calldata path) external view returns (bytes memory);
    function skip(bool skipTest) external;
    function skip(bool skipTest, string calldata reason) external;
    function pauseGasMetering() external;
    function resumeGasMetering() external;
}
