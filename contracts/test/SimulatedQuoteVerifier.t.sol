// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Test} from "./utils/Test.sol";
import {SimQuote} from "./utils/SimQuote.sol";
import {SimulatedQuoteVerifier} from "../src/SimulatedQuoteVerifier.sol";
import {IQuoteVerifier} from "../src/IQuoteVerifier.sol";
import {DevToken} from "../src/DevToken.sol";

contract SimulatedQuoteVerifierTest is Test {
    SimulatedQuoteVerifier internal v;
    bytes internal rd;

    function setUp() public {
        v = new SimulatedQuoteVerifier();
        rd = SimQuote.reportData(address(0xABCD), keccak256("nonce"));
    }

    function test_acceptsSimulatedQuote() public view {
        bytes memory q = SimQuote.build(rd);
        assertEq(q.length, 701, "quote length like the Rust builder");
        IQuoteVerifier.QuoteInfo memory info = v.verifyQuote(q);
        assertEq(uint256(info.tcbStatus), 0, "UpToDate");
        assertEq(info.measurement, SimQuote.MEASUREMENT, "measurement digest");
        assertEq(info.reportData, rd, "report data");
    }

    function test_measurementCoversMrTdRtmrsAndConfigId() public view {
        bytes memory signed = abi.encodePacked(SimQuote.header(), SimQuote.body(new bytes(48), rd));
        IQuoteVerifier.QuoteInfo memory info = v.verifyQuote(SimQuote.seal(signed));
        bytes32 expected = sha256(abi.encodePacked(new bytes(48), SimQuote.RTMR0, SimQuote.RTMR1, SimQuote.RTMR2, new bytes(48)));
        assertEq(info.measurement, expected, "mr_td zero");
        // MR_CONFIG_ID (body 184) and RTMR3 (body 472)
        bytes memory s2 = abi.encodePacked(SimQuote.header(), SimQuote.body(SimQuote.MR_TD, rd));
        s2[48 + 184] = 0x01;
        assertTrue(v.verifyQuote(SimQuote.seal(s2)).measurement != SimQuote.MEASUREMENT, "mr_config_id counts");
        bytes memory s3 = abi.encodePacked(SimQuote.header(), SimQuote.body(SimQuote.MR_TD, rd));
        s3[48 + 472] = 0x01;
        assertEq(v.verifyQuote(SimQuote.seal(s3)).measurement, SimQuote.MEASUREMENT, "rtmr3 excluded");
    }

    function test_revert_NotLocalChain() public {
        vm.chainId(8453);
        vm.expectRevert(SimulatedQuoteVerifier.NotLocalChain.selector);
        new SimulatedQuoteVerifier();
        vm.chainId(1337);
        new SimulatedQuoteVerifier();
    }

    function test_devToken_NotLocalChain_and_mint() public {
        vm.chainId(10);
        vm.expectRevert(DevToken.NotLocalChain.selector);
        new DevToken();
        vm.chainId(31337);
        DevToken t = new DevToken();
        vm.prank(address(0xBEEF));
        t.mint(address(0xCAFE), 5);
        assertEq(t.balanceOf(address(0xCAFE)), 5, "minted");
        assertEq(t.symbol(), "cUSD", "symbol");
        assertEq(t.name(), "Cloister Dev USD", "name");
    }

    function test_revert_QuoteTooShort() public {
        bytes memory q = SimQuote.build(rd);
        bytes memory short = new bytes(700);
        for (uint256 i; i < 700; ++i) short[i] = q[i];
        vm.expectRevert(SimulatedQuoteVerifier.QuoteTooShort.selector);
        v.verifyQuote(short);
        vm.expectRevert(SimulatedQuoteVerifier.QuoteTooShort.selector);
        v.verifyQuote("");
        // declared signature length larger than the data
        q[632] = 0x42;
        vm.expectRevert(SimulatedQuoteVerifier.QuoteTooShort.selector);
        v.verifyQuote(q);
        // declared signature length smaller than marker + hash
        q[632] = 0x40;
        vm.expectRevert(SimulatedQuoteVerifier.QuoteTooShort.selector);
        v.verifyQuote(q);
    }

    function test_revert_NotSimulatedQuote() public {
        uint256[5] memory at = [uint256(0), 4, 12, 27, 636];
        for (uint256 k; k < at.length; ++k) {
            bytes memory q = SimQuote.build(rd);
            q[at[k]] = bytes1(uint8(q[at[k]]) ^ 0x01);
            vm.expectRevert(SimulatedQuoteVerifier.NotSimulatedQuote.selector);
            v.verifyQuote(q);
        }
    }

    function test_revert_BadDevSignature() public {
        bytes memory q = SimQuote.build(rd);
        q[631] = bytes1(uint8(q[631]) ^ 0x01); // last report_data byte
        vm.expectRevert(SimulatedQuoteVerifier.BadDevSignature.selector);
        v.verifyQuote(q);
        q = SimQuote.build(rd);
        q[700] = bytes1(uint8(q[700]) ^ 0x80); // the signature itself
        vm.expectRevert(SimulatedQuoteVerifier.BadDevSignature.selector);
        v.verifyQuote(q);
    }

    /// Any single-byte change in the signed part is caught (by the format checks or the signature).
    function testFuzz_tamperedQuoteNeverVerifies(uint256 pos, uint8 flip) public {
        pos = bound(pos, 0, 700);
        vm.assume(flip != 0);
        bytes memory q = SimQuote.build(rd);
        // bytes that are neither checked nor signed: the unused header fields after the vendor id
        // are signed (0..632), so every position in 0..632 and the marker/signature are covered;
        // only the length word's high bytes (633..635) may flip to a still-valid-but-longer length.
        vm.assume(pos < 632 || pos >= 636);
        q[pos] = bytes1(uint8(q[pos]) ^ flip);
        vm.expectRevert();
        v.verifyQuote(q);
    }

    function testFuzz_reportDataRoundTrips(address s, bytes32 nonce) public view {
        bytes memory r = SimQuote.reportData(s, nonce);
        assertEq(v.verifyQuote(SimQuote.build(r)).reportData, r, "report data");
    }

    function test_trailingSignatureDataAccepted() public view {
        bytes memory q = abi.encodePacked(SimQuote.build(rd), hex"00");
        // length word still says 65: extra trailing bytes are ignored, as in Automata's parser
        v.verifyQuote(q);
    }
}
