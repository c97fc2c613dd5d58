// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IQuoteVerifier} from "./IQuoteVerifier.sol";
import {TdxReport} from "./TdxReport.sol";

/// @title SimulatedQuoteVerifier
/// @notice DEVNET ONLY. Accepts the simulated quotes a Cloister node emits with `--dev-simulated-tee`
///         (docs/protocol.md §6) and nothing else. They prove nothing about hardware: the "signature"
///         is sha256 of the header and body, which anyone can compute. The constructor refuses to
///         deploy anywhere but a local chain (chain id 31337 or 1337).
/// @dev Layout: u16 LE version 4 at 0, u32 LE tee type 0x81 at 4, Intel's QE vendor id
///      (939a7233f79c4ca9940a0db3957f0607, as real quotes: DCAP verifiers refuse it on the signature) at
///      12..28, the 584-byte TD report at 48, u32 LE signature-data length at 632, signature data at
///      636 = `CLOISTER-SIMULATED-TEE-NOT-SECURE` ‖ sha256(quote[0:632]). TCB status is always 0.
contract SimulatedQuoteVerifier is IQuoteVerifier {
    /// @notice Deployment on a chain other than 31337 / 1337.
    error NotLocalChain();
    /// @notice The quote is not a Cloister simulated quote (version, TEE type, vendor id or marker).
    error NotSimulatedQuote();
    /// @notice The dev signature is not sha256(quote[0:632]).
    error BadDevSignature();
    /// @notice The quote is shorter than its layout requires.
    error QuoteTooShort();

    bytes16 internal constant SIM_QE_VENDOR_ID = hex"939a7233f79c4ca9940a0db3957f0607";
    bytes internal constant MARKER = "CLOISTER-SIMULATED-TEE-NOT-SECURE"; // 33 bytes
    uint256 internal constant SIGNED_LENGTH = 632; // header + TD 1.0 body
    uint256 internal constant SIG_DATA = 636;
    uint256 internal constant SIG_LENGTH = 65; // marker + sha256

    constructor() {
        if (block.chainid != 31337 && block.chainid != 1337) revert NotLocalChain();
    }

    /// @inheritdoc IQuoteVerifier
    function verifyQuote(bytes calldata quote) external view returns (QuoteInfo memory info) {
        if (quote.length < SIG_DATA + SIG_LENGTH) revert QuoteTooShort();
        uint256 sigLen = _u32le(quote, SIGNED_LENGTH);
        if (sigLen < SIG_LENGTH || quote.length - SIG_DATA < sigLen) revert QuoteTooShort();
        if (
            _u16le(quote, 0) != 4 || _u32le(quote, 4) != 0x81 || bytes16(quote[12:28]) != SIM_QE_VENDOR_ID
                || keccak256(quote[SIG_DATA:SIG_DATA + 33]) != keccak256(MARKER)
        ) revert NotSimulatedQuote();
        bytes memory signed = quote[0:SIGNED_LENGTH];
        if (bytes32(quote[SIG_DATA + 33:SIG_DATA + 65]) != sha256(signed)) revert BadDevSignature();
        (info.measurement, info.reportData) = TdxReport.read(signed, TdxReport.HEADER_LENGTH);
        info.tcbStatus = 0;
    }

    function _u16le(bytes calldata b, uint256 pos) private pure returns (uint256) {
        return uint256(uint8(b[pos])) | (uint256(uint8(b[pos + 1])) << 8);
    }

    function _u32le(bytes calldata b, uint256 pos) private pure returns (uint256) {
        return uint256(uint8(b[pos])) | (uint256(uint8(b[pos + 1])) << 8) | (uint256(uint8(b[pos + 2])) << 16)
            | (uint256(uint8(b[pos + 3])) << 24);
    }
}
