// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IQuoteVerifier} from "./IQuoteVerifier.sol";
import {TdxReport} from "./TdxReport.sol";

/// @title IAutomataDcapAttestation
/// @notice The entry point of Automata's on-chain DCAP verifier (automata-network/automata-dcap-attestation).
interface IAutomataDcapAttestation {
    /// @notice Fully verifies a raw quote on chain (about 4–5M gas for a TDX quote).
    /// @return success whether the quote verified
    /// @return output on success, the packed Output (below); on failure, the reason as bytes
    function verifyAndAttestOnChain(bytes calldata rawQuote) external payable returns (bool success, bytes memory output);
}

/// @title AutomataDcapAdapter
/// @notice IQuoteVerifier over Automata's on-chain DCAP verifier (production path).
/// @dev Automata's output is `abi.encodePacked(uint16 quoteVersion, uint16 quoteBodyType, uint8 tcbStatus,
///      bytes6 fmspc, bytes quoteBody, advisoryIDs.length > 0 ? abi.encode(string[] advisoryIDs) : "")`,
///      integers big-endian: bytes 0..2 version, 2..4 body type (1 SGX enclave report, 2 TD 1.0 report of
///      584 bytes, 3 TD 1.5 report of 648 bytes), 4 TCB status (Automata's TCBStatus numbering, see
///      IQuoteVerifier), 5..11 FMSPC, then the body. Only TDX bodies (types 2 and 3) are accepted.
///      If Automata's deployment charges a fee, this adapter forwards none; use a fee-free deployment.
contract AutomataDcapAdapter is IQuoteVerifier {
    /// @notice Automata rejected the quote; `output` is its reason.
    error QuoteRejected(bytes output);
    /// @notice Automata's output is not a TDX quote body this adapter understands.
    error UnsupportedOutput(uint16 quoteVersion, uint16 quoteBodyType);
    /// @notice Automata's output is shorter than its header and body.
    error OutputTooShort(uint256 length);
    /// @notice The constructor was given the zero address.
    error ZeroAddress();

    uint256 internal constant OUTPUT_HEADER = 11;
    uint16 internal constant BODY_TD10 = 2;
    uint16 internal constant BODY_TD15 = 3;

    /// @notice Automata's DCAP attestation contract.
    IAutomataDcapAttestation public immutable automata;

    /// @param automata_ Address of Automata's `AutomataDcapAttestationFee` (or compatible) contract.
    constructor(address automata_) {
        if (automata_ == address(0)) revert ZeroAddress();
        automata = IAutomataDcapAttestation(automata_);
    }

    /// @inheritdoc IQuoteVerifier
    function verifyQuote(bytes calldata quote) external returns (QuoteInfo memory info) {
        (bool success, bytes memory output) = automata.verifyAndAttestOnChain(quote);
        if (!success) revert QuoteRejected(output);
        return parseOutput(output);
    }

    /// @notice Parses Automata's packed output (exposed for tests and off-chain tooling).
    function parseOutput(bytes memory output) public view returns (QuoteInfo memory info) {
        if (output.length < OUTPUT_HEADER) revert OutputTooShort(output.length);
        uint16 version = uint16(uint8(output[0])) << 8 | uint16(uint8(output[1]));
        uint16 bodyType = uint16(uint8(output[2])) << 8 | uint16(uint8(output[3]));
        if ((version != 4 && version != 5) || (bodyType != BODY_TD10 && bodyType != BODY_TD15)) {
            revert UnsupportedOutput(version, bodyType);
        }
        if (output.length < OUTPUT_HEADER + TdxReport.TD10_BODY_LENGTH) revert OutputTooShort(output.length);
        info.tcbStatus = uint8(output[4]);
        (info.measurement, info.reportData) = TdxReport.read(output, OUTPUT_HEADER);
    }
}
