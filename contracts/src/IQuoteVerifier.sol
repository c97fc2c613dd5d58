// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title IQuoteVerifier
/// @notice Checks a TDX quote and returns what NodeRegistry needs from it.
/// @dev `tcbStatus` uses Automata DCAP's TCBStatus numbering (on-chain-pccs `FmspcTcbHelper.TCBStatus`):
///      0 OK (UpToDate), 1 SWHardeningNeeded, 2 ConfigurationAndSWHardeningNeeded, 3 ConfigurationNeeded,
///      4 OutOfDate, 5 OutOfDateConfigurationNeeded, 6 Revoked, 7 Unrecognized,
///      8 TDRelaunchAdvised, 9 TDRelaunchAdvisedConfigurationNeeded.
///      `measurement` = sha256(MRTD ‖ RTMR0 ‖ RTMR1 ‖ RTMR2 ‖ MR_CONFIG_ID), 48 raw bytes each
///      (docs/protocol.md §7). `reportData` is the 64-byte TD report_data (protocol.md §2).
interface IQuoteVerifier {
    /// @notice What a verified quote says.
    struct QuoteInfo {
        uint8 tcbStatus;
        bytes32 measurement;
        bytes reportData;
    }

    /// @notice Verifies `quote`; reverts if it is invalid.
    /// @param quote The raw quote bytes (TDX v4 layout).
    /// @return info The TCB status, the measurement digest and the 64-byte report_data.
    function verifyQuote(bytes calldata quote) external returns (QuoteInfo memory info);
}
