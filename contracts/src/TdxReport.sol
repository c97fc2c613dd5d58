// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title TdxReport
/// @notice Offsets in a TDX TD 1.0 report body (584 bytes; TD 1.5 appends fields and moves none of
///         these) and the Cloister measurement digest (docs/protocol.md §7).
library TdxReport {
    /// @notice The SHA-256 precompile call failed.
    error Sha256Failed();

    /// @dev Length of a quote header.
    uint256 internal constant HEADER_LENGTH = 48;
    /// @dev Length of a TD 1.0 report body.
    uint256 internal constant TD10_BODY_LENGTH = 584;
    uint256 internal constant MR_TD = 136;
    uint256 internal constant MR_CONFIG_ID = 184;
    /// @dev RTMR0, RTMR1 and RTMR2 are contiguous (328..472).
    uint256 internal constant RTMR0 = 328;
    uint256 internal constant REPORT_DATA = 520;

    /// @notice Reads the measurement digest and report_data of the TD report body that starts at
    ///         `bodyOffset` in `buf`. The caller guarantees `buf.length >= bodyOffset + 584`.
    /// @return measurement sha256(MRTD ‖ RTMR0 ‖ RTMR1 ‖ RTMR2 ‖ MR_CONFIG_ID)
    /// @return reportData the 64 report_data bytes (a fresh copy)
    function read(bytes memory buf, uint256 bodyOffset)
        internal
        view
        returns (bytes32 measurement, bytes memory reportData)
    {
        reportData = new bytes(64);
        bool ok;
        assembly ("memory-safe") {
            let body := add(add(buf, 0x20), bodyOffset)
            let scratch := mload(0x40)
            mcopy(scratch, add(body, MR_TD), 48)
            mcopy(add(scratch, 48), add(body, RTMR0), 144)
            mcopy(add(scratch, 192), add(body, MR_CONFIG_ID), 48)
            ok := staticcall(gas(), 0x02, scratch, 240, 0x00, 0x20)
            measurement := mload(0x00)
            mcopy(add(reportData, 0x20), add(body, REPORT_DATA), 64)
        }
        if (!ok) revert Sha256Failed();
    }
}
