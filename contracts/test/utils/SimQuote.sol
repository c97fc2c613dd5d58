// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @notice Builds Cloister simulated TDX v4 quotes byte-for-byte like the Rust side
///         (`cloister_attest::simulated::simulated_quote`).
library SimQuote {
    /// @dev sha384("cloister/simulated/" ‖ label), precomputed (no SHA-384 on the EVM).
    bytes internal constant MR_SEAM =
        hex"65d36deff1e55c2dc31773399684991024775e73412e5084f880c8b747b695294ab3b6212d47cc2ed4456517a6bd9703";
    bytes internal constant MR_TD =
        hex"241f5aa81e0103605aa8b5a06611ab9385a8591755902a2a5304165a8b3bcfa7671215b3b3aeefc8e60321ba2ef2b8f9";
    bytes internal constant RTMR0 =
        hex"4c1c726882909d83b543ce2623dbd3457e8e1f7688d6750e703bee61bc88f61d6557e7cf9fdae44fe95ba53dff2d009f";
    bytes internal constant RTMR1 =
        hex"164cf17662abe1490085afc61222dc243d3134bf6afad34922bb36f701114e3a2783a179e810fc76f562ac1781482d32";
    bytes internal constant RTMR2 =
        hex"3c87034b360de558e53f64f28d4c26ac623aae0f09d6517173d5420720391c60df699a894c79e8203d2e132e532ba1fe";
    bytes internal constant RTMR3 =
        hex"fc4c5d0cf584687e41afa5c1abaf4463e27f423b7b2a585d00cb66b4401169d45c4060fe4751e4c9bdc882e47ed754d5";

    /// @dev sha256(MR_TD ‖ RTMR0 ‖ RTMR1 ‖ RTMR2 ‖ 0^48), computed independently (Python hashlib).
    bytes32 internal constant MEASUREMENT = 0x95b238d964225a0e2f00b36818f7442d5133d7df04779cf296e5ad127817bbcc;

    bytes internal constant MARKER = "CLOISTER-SIMULATED-TEE-NOT-SECURE";

    /// @notice The 584-byte TD 1.0 body with the given MR_TD and report_data.
    function body(bytes memory mrTd, bytes memory rd) internal pure returns (bytes memory) {
        require(rd.length == 64 && mrTd.length == 48, "SimQuote: lengths");
        bytes memory b = abi.encodePacked(
            new bytes(16), // tee_tcb_svn
            MR_SEAM,
            new bytes(48), // mr_signer_seam
            new bytes(8), // seam_attributes
            hex"0000001000000000", // td_attributes
            hex"e702060000000000", // xfam
            mrTd,
            new bytes(48 * 3) // mr_config_id, mr_owner, mr_owner_config
        );
        return abi.encodePacked(b, RTMR0, RTMR1, RTMR2, RTMR3, rd);
    }

    /// @notice The 48-byte header of a simulated quote.
    function header() internal pure returns (bytes memory) {
        return abi.encodePacked(
            hex"0400", // version 4 (u16 LE)
            hex"0200", // attestation key type 2 (u16 LE)
            hex"81000000", // tee type 0x81 (u32 LE)
            hex"00000000", // qe_svn, pce_svn
            hex"939a7233f79c4ca9940a0db3957f0607", // Intel's QE vendor id
            new bytes(20)
        );
    }

    /// @notice A complete simulated quote with the dev measurements and `reportData`.
    function build(bytes memory rd) internal pure returns (bytes memory) {
        return seal(abi.encodePacked(header(), body(MR_TD, rd)));
    }

    /// @notice Appends the signature-data length, marker and dev signature to header ‖ body.
    function seal(bytes memory signed) internal pure returns (bytes memory) {
        require(signed.length == 632, "SimQuote: 632");
        return abi.encodePacked(signed, hex"41000000", MARKER, sha256(signed));
    }

    /// @notice report_data = signer ‖ 0^12 ‖ nonce.
    function reportData(address signer, bytes32 nonce) internal pure returns (bytes memory) {
        return abi.encodePacked(signer, bytes12(0), nonce);
    }
}
