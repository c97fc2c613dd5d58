// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Test} from "./utils/Test.sol";
import {SimQuote} from "./utils/SimQuote.sol";
import {Fixture} from "./utils/Fixture.sol";
import {AutomataDcapAdapter, IAutomataDcapAttestation} from "../src/AutomataDcapAdapter.sol";
import {IQuoteVerifier} from "../src/IQuoteVerifier.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";

/// @notice Stands in for Automata's DCAP verifier (not deployable here): answers with a preset
///         (success, output) in Automata's real output layout.
contract AutomataTestDouble is IAutomataDcapAttestation {
    bool public success;
    bytes public output;
    bytes32 public lastQuoteHash;

    function set(bool success_, bytes memory output_) external {
        success = success_;
        output = output_;
    }

    function verifyAndAttestOnChain(bytes calldata rawQuote) external payable returns (bool, bytes memory) {
        lastQuoteHash = keccak256(rawQuote);
        return (success, output);
    }
}

/// @notice Automata's packed output: u16 BE version ‖ u16 BE body type ‖ u8 tcb status ‖ bytes6 fmspc ‖
///         body ‖ (advisory ids ? abi.encode(string[]) : "").
library AutomataOutput {
    function encode(uint16 version, uint16 bodyType, uint8 tcb, bytes6 fmspc, bytes memory body, string[] memory adv)
        internal
        pure
        returns (bytes memory)
    {
        return abi.encodePacked(version, bodyType, tcb, fmspc, body, adv.length > 0 ? abi.encode(adv) : bytes(""));
    }
}

contract AutomataDcapAdapterTest is Fixture {
    string internal constant CORPUS = "/work/shared/testdata/attestation/dcap-qvl/tdx_quote";
    /// @dev Independently computed (Python hashlib) from that quote: sha256(MRTD‖RTMR0‖RTMR1‖RTMR2‖MR_CONFIG_ID).
    bytes32 internal constant REAL_MEASUREMENT = 0x8ef444fda246f7e0d5f9a3ba0a2822ae0be7dbec5e321277d03b73b198fa2545;
    bytes internal constant REAL_REPORT_DATA =
        hex"9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20";
    bytes6 internal constant REAL_FMSPC = 0xB0C06F000000;

    AutomataTestDouble internal automata;
    AutomataDcapAdapter internal adapter;

    function setUp() public override {
        super.setUp();
        automata = new AutomataTestDouble();
        adapter = new AutomataDcapAdapter(address(automata));
    }

    /// @dev The real quote's 584-byte TD report body, or empty if the corpus is absent.
    function realQuote() internal returns (bytes memory quote, bytes memory body) {
        if (!vm.exists(CORPUS)) {
            vm.skip(true, "attestation corpus absent (/work/shared/testdata/attestation)");
            return (quote, body);
        }
        quote = vm.readFileBinary(CORPUS);
        body = new bytes(584);
        for (uint256 i; i < 584; ++i) body[i] = quote[48 + i];
    }

    function test_realTdxQuoteBody() public {
        (bytes memory quote, bytes memory body) = realQuote();
        assertEq(uint256(uint8(quote[0])), 4, "v4 quote");
        string[] memory adv = new string[](0);
        automata.set(true, AutomataOutput.encode(4, 2, 0, REAL_FMSPC, body, adv));
        IQuoteVerifier.QuoteInfo memory info = adapter.verifyQuote(quote);
        assertEq(automata.lastQuoteHash(), keccak256(quote), "quote forwarded unchanged");
        assertEq(uint256(info.tcbStatus), 0, "UpToDate");
        assertEq(info.measurement, REAL_MEASUREMENT, "measurement");
        assertEq(info.reportData, REAL_REPORT_DATA, "report data");
    }

    function test_advisoryIdsAndTcbStatusPassThrough() public {
        (bytes memory quote, bytes memory body) = realQuote();
        string[] memory adv = new string[](2);
        adv[0] = "INTEL-SA-00289";
        adv[1] = "INTEL-SA-00615";
        for (uint8 s; s < 10; ++s) {
            automata.set(true, AutomataOutput.encode(4, 2, s, REAL_FMSPC, body, adv));
            IQuoteVerifier.QuoteInfo memory info = adapter.verifyQuote(quote);
            assertEq(uint256(info.tcbStatus), s, "tcb status");
            assertEq(info.measurement, REAL_MEASUREMENT, "measurement");
        }
    }

    function test_td15BodyAccepted() public {
        bytes memory body15 = abi.encodePacked(SimQuote.body(SimQuote.MR_TD, new bytes(64)), new bytes(64));
        automata.set(true, AutomataOutput.encode(5, 3, 1, REAL_FMSPC, body15, new string[](0)));
        IQuoteVerifier.QuoteInfo memory info = adapter.verifyQuote(hex"00");
        assertEq(info.measurement, SimQuote.MEASUREMENT, "measurement from TD 1.5 body");
        assertEq(uint256(info.tcbStatus), 1, "SWHardeningNeeded");
    }

    function test_revert_QuoteRejected() public {
        automata.set(false, bytes("Failed to verify X509 Chain"));
        vm.expectRevert(abi.encodeWithSelector(AutomataDcapAdapter.QuoteRejected.selector, bytes("Failed to verify X509 Chain")));
        adapter.verifyQuote(hex"0400");
    }

    function test_revert_UnsupportedOutput_sgx() public {
        automata.set(true, AutomataOutput.encode(4, 1, 0, REAL_FMSPC, new bytes(584), new string[](0)));
        vm.expectRevert(abi.encodeWithSelector(AutomataDcapAdapter.UnsupportedOutput.selector, uint16(4), uint16(1)));
        adapter.verifyQuote(hex"00");
        automata.set(true, AutomataOutput.encode(3, 2, 0, REAL_FMSPC, new bytes(584), new string[](0)));
        vm.expectRevert(abi.encodeWithSelector(AutomataDcapAdapter.UnsupportedOutput.selector, uint16(3), uint16(2)));
        adapter.verifyQuote(hex"00");
    }

    function test_revert_OutputTooShort() public {
        automata.set(true, hex"0004");
        vm.expectRevert(abi.encodeWithSelector(AutomataDcapAdapter.OutputTooShort.selector, uint256(2)));
        adapter.verifyQuote(hex"00");
        automata.set(true, AutomataOutput.encode(4, 2, 0, REAL_FMSPC, new bytes(583), new string[](0)));
        vm.expectRevert(abi.encodeWithSelector(AutomataDcapAdapter.OutputTooShort.selector, uint256(594)));
        adapter.verifyQuote(hex"00");
    }

    function test_revert_ZeroAddress() public {
        vm.expectRevert(AutomataDcapAdapter.ZeroAddress.selector);
        new AutomataDcapAdapter(address(0));
    }

    /// The real quote through the registry: verified, measurement allowed, but its report_data is not
    /// Cloister layout (bytes 20..32 are not zero), so registration is refused with BadReportData
    /// (it carries no nonce of ours either).
    function test_registry_realQuoteRefused_BadReportData() public {
        (bytes memory quote, bytes memory body) = realQuote();
        automata.set(true, AutomataOutput.encode(4, 2, 0, REAL_FMSPC, body, new string[](0)));
        vm.startPrank(owner);
        registry.setVerifier(adapter);
        registry.announceMeasurement(REAL_MEASUREMENT, true);
        registry.executeMeasurement(REAL_MEASUREMENT);
        vm.stopPrank();
        token.mint(operator, MIN_STAKE);
        vm.startPrank(operator);
        token.approve(address(registry), MIN_STAKE);
        vm.expectRevert(NodeRegistry.BadReportData.selector);
        registry.register(quote, "https://n", models1(), MIN_STAKE);
        vm.stopPrank();
    }

    /// A real-layout body with our report_data registers through the adapter.
    function test_registry_registersThroughAdapter() public {
        (, bytes memory body) = realQuote();
        bytes memory rd = SimQuote.reportData(signer, registry.attestationNonce(operator));
        for (uint256 i; i < 64; ++i) body[520 + i] = rd[i];
        automata.set(true, AutomataOutput.encode(4, 2, 0, REAL_FMSPC, body, new string[](0)));
        vm.startPrank(owner);
        registry.setVerifier(adapter);
        registry.announceMeasurement(REAL_MEASUREMENT, true);
        registry.executeMeasurement(REAL_MEASUREMENT);
        vm.stopPrank();
        token.mint(operator, MIN_STAKE);
        vm.startPrank(operator);
        token.approve(address(registry), MIN_STAKE);
        registry.register(hex"c0ffee", "https://n", models1(), MIN_STAKE);
        vm.stopPrank();
        assertEq(registry.signerOf(operator), signer, "signer");
        assertEq(registry.getNode(operator).measurement, REAL_MEASUREMENT, "measurement stored");
    }

    /// Gas the adapter adds on top of Automata's own verification (both warm).
    function test_gas_adapterOverhead() public {
        (bytes memory quote, bytes memory body) = realQuote();
        automata.set(true, AutomataOutput.encode(4, 2, 0, REAL_FMSPC, body, new string[](0)));
        automata.verifyAndAttestOnChain(quote);
        adapter.verifyQuote(quote);
        uint256 g0 = gasleft();
        automata.verifyAndAttestOnChain(quote);
        uint256 direct = g0 - gasleft();
        g0 = gasleft();
        adapter.verifyQuote(quote);
        uint256 viaAdapter = g0 - gasleft();
        emit log_named_uint("automata double, called directly (gas)", direct);
        emit log_named_uint("through adapter (gas)", viaAdapter);
        emit log_named_uint("adapter overhead (gas)", viaAdapter - direct);
        assertLe(viaAdapter - direct, 30_000, "adapter overhead is small");
    }
}
