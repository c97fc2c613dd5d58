// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Fixture} from "./utils/Fixture.sol";
import {SimQuote} from "./utils/SimQuote.sol";
import {Escrow} from "../src/Escrow.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";
import {InferenceOracle} from "../src/InferenceOracle.sol";
import {ExampleConsumer} from "../src/ExampleConsumer.sol";
import {AutomataDcapAdapter} from "../src/AutomataDcapAdapter.sol";
import {AutomataTestDouble, AutomataOutput} from "./AutomataDcapAdapter.t.sol";

/// @notice Gas figures for BENCHMARKS.md. Run: `forge test --match-path test/Gas.t.sol -vv` (in contracts/).
///         State is prepared in setUp (a separate transaction), so each measured call starts with cold
///         accounts and storage, as a real transaction would. "exec" is execution gas measured with
///         gasleft() around the external call; "tx" adds the 21,000 base and the EIP-2028 calldata cost
///         (16 per non-zero byte, 4 per zero byte): an L1-style estimate (an L2 prices calldata its own way).
abstract contract GasBase is Fixture {
    function calldataGas(bytes memory data) internal pure returns (uint256 g) {
        for (uint256 i; i < data.length; ++i) g += data[i] == 0 ? 4 : 16;
    }

    function report(string memory what, uint256 exec, bytes memory data) internal returns (uint256 txGas) {
        txGas = exec + 21_000 + calldataGas(data);
        emit log(what);
        emit log_named_uint("  exec gas", exec);
        emit log_named_uint("  calldata bytes", data.length);
        emit log_named_uint("  tx gas (exec + 21000 + calldata)", txGas);
    }
}

contract GasRegisterTest is GasBase {
    bytes internal q;

    function setUp() public override {
        super.setUp();
        token.mint(operator, MIN_STAKE);
        vm.prank(operator);
        token.approve(address(registry), MIN_STAKE);
        q = quoteFor(operator, signer);
    }

    function test_gas_register() public {
        NodeRegistry.ModelPrice[] memory m = models1();
        string memory ep = "https://node.example:8443";
        bytes memory data = abi.encodeCall(NodeRegistry.register, (q, ep, m, MIN_STAKE));
        bytes memory quote = q;
        vm.prank(operator);
        uint256 g = gasleft();
        registry.register(quote, ep, m, MIN_STAKE);
        g -= gasleft();
        report("NodeRegistry.register (SimulatedQuoteVerifier, 1 model, 25-byte endpoint)", g, data);
    }

    function test_gas_simulatedVerifierAlone() public {
        bytes memory quote = q;
        uint256 g = gasleft();
        simVerifier.verifyQuote(quote);
        g -= gasleft();
        report("SimulatedQuoteVerifier.verifyQuote alone", g, quote);
    }
}

contract GasReattestTest is GasBase {
    bytes internal q;

    function setUp() public override {
        super.setUp();
        registerNode(OPERATOR_PK, SIGNER_PK);
        q = quoteFor(operator, vm.addr(0x5EC0DD));
    }

    function test_gas_reattest() public {
        bytes memory quote = q;
        vm.prank(operator);
        uint256 g = gasleft();
        registry.reattest(quote);
        g -= gasleft();
        report("NodeRegistry.reattest (SimulatedQuoteVerifier)", g, abi.encodeCall(NodeRegistry.reattest, (quote)));
    }
}

contract GasAdapterTest is GasBase {
    AutomataTestDouble internal automata;
    AutomataDcapAdapter internal adapter;

    function setUp() public override {
        super.setUp();
        automata = new AutomataTestDouble();
        adapter = new AutomataDcapAdapter(address(automata));
        bytes memory body = SimQuote.body(SimQuote.MR_TD, new bytes(64));
        automata.set(true, AutomataOutput.encode(4, 2, 0, bytes6(0xB0C06F000000), body, new string[](0)));
    }

    /// Adapter overhead = (adapter → double) − (double alone), both with the double's storage warm,
    /// plus the cold access to the adapter account itself (2,600) in a real transaction.
    function test_gas_adapterOverhead() public {
        bytes memory quote = new bytes(5006); // the size of the corpus TDX quote
        automata.verifyAndAttestOnChain(quote); // warm the double
        uint256 g0 = gasleft();
        automata.verifyAndAttestOnChain(quote);
        uint256 direct = g0 - gasleft();
        g0 = gasleft();
        adapter.verifyQuote(quote);
        uint256 via = g0 - gasleft();
        emit log("AutomataDcapAdapter own overhead (5,006-byte quote; verifier excluded)");
        emit log_named_uint("  verifier double called directly", direct);
        emit log_named_uint("  through the adapter (adapter account cold)", via);
        emit log_named_uint("  adapter overhead", via - direct);
    }
}

abstract contract SettleGasBase is GasBase {
    uint256 internal constant CLIENTS = 100;
    uint256 internal constant PK_BASE = 0x10000;
    bytes32 internal domain;

    function setUp() public virtual override {
        super.setUp();
        registerNode(OPERATOR_PK, SIGNER_PK);
        for (uint256 i; i < CLIENTS; ++i) {
            address c = vm.addr(PK_BASE + i);
            token.mint(c, 100 ether);
            vm.startPrank(c);
            token.approve(address(escrow), 100 ether);
            escrow.deposit(100 ether);
            vm.stopPrank();
        }
        domain = escrow.domainSeparator();
    }

    /// Items for clients 0..n-1, signed with digests computed here (no calls that would warm state).
    function items(uint256 n, uint256 cumulative) internal view returns (Escrow.SettleItem[] memory its) {
        its = new Escrow.SettleItem[](n);
        bytes32 d = domain;
        for (uint256 i; i < n; ++i) {
            Escrow.SpendAuthorization memory a = Escrow.SpendAuthorization(
                vm.addr(PK_BASE + i), operator, 50 ether, uint64(1_800_000_000 + 30 days), bytes32(i)
            );
            bytes32 id = keccak256(
                abi.encodePacked(
                    hex"1901",
                    d,
                    keccak256(
                        abi.encode(escrow.SPEND_AUTHORIZATION_TYPEHASH(), a.client, a.node, a.maxAmount, a.expiry, a.salt)
                    )
                )
            );
            bytes32 vd = keccak256(
                abi.encodePacked(hex"1901", d, keccak256(abi.encode(escrow.USAGE_VOUCHER_TYPEHASH(), id, cumulative + i)))
            );
            its[i] = Escrow.SettleItem(a, sig(PK_BASE + i, id), cumulative + i, sig(SIGNER_PK, vd));
        }
    }

    function measure(uint256 n, uint256 cumulative, string memory label) internal {
        Escrow.SettleItem[] memory its = items(n, cumulative);
        bytes memory data = abi.encodeCall(Escrow.settle, (its));
        uint256 g = gasleft();
        escrow.settle(its);
        g -= gasleft();
        uint256 t = report(string.concat("Escrow.settle, ", _u(n), " vouchers, ", label), g, data);
        emit log_named_uint("  tx gas per voucher", t / n);
        emit log_named_uint("  tx gas per request at 1,000 requests per voucher", t / n / 1000);
    }

}

contract GasSettleTest is SettleGasBase {
    function test_gas_settle1() public {
        measure(1, 1 ether, "first settlement of each authorization");
    }

    function test_gas_settle10() public {
        measure(10, 1 ether, "first settlement of each authorization");
    }

    function test_gas_settle100() public {
        measure(100, 1 ether, "first settlement of each authorization");
    }
}

/// Same, but each authorization was settled once before (the steady state of a long-lived key).
contract GasSettleAgainTest is SettleGasBase {
    function setUp() public override {
        super.setUp();
        escrow.settle(items(CLIENTS, 1 ether));
    }

    function test_gas_settleAgain1() public {
        measure(1, 2 ether, "later settlement of the same authorizations");
    }

    function test_gas_settleAgain10() public {
        measure(10, 2 ether, "later settlement of the same authorizations");
    }

    function test_gas_settleAgain100() public {
        measure(100, 2 ether, "later settlement of the same authorizations");
    }
}

contract GasOracleTest is GasBase {
    address internal req;
    uint256 internal pendingId;
    uint256 internal pendingCbId;
    ExampleConsumer internal consumer;
    bytes internal constant INPUT = "What is the capital of France? Answer in one word.";
    bytes internal constant OUTPUT = "Paris.";

    function setUp() public override {
        super.setUp();
        registerNode(OPERATOR_PK, SIGNER_PK);
        req = vm.addr(0xEE);
        token.mint(req, 10 ether);
        vm.prank(req);
        token.approve(address(oracle), 10 ether);
        vm.prank(req);
        pendingId = oracle.request(MODEL, INPUT, 1 ether, address(0), 0);
        consumer = new ExampleConsumer(oracle);
        vm.prank(req);
        token.approve(address(consumer), 1 ether);
        vm.prank(req);
        pendingCbId = consumer.ask(MODEL, INPUT, 1 ether);
    }

    function test_gas_request() public {
        bytes memory input = INPUT;
        bytes memory data = abi.encodeCall(InferenceOracle.request, (MODEL, input, 1 ether, address(0), 0));
        vm.prank(req);
        uint256 g = gasleft();
        oracle.request(MODEL, input, 1 ether, address(0), 0);
        g -= gasleft();
        report("InferenceOracle.request (50-byte input, no callback; not the first request)", g, data);
    }

    function test_gas_fulfill() public {
        bytes memory output = OUTPUT;
        bytes memory s = sig(SIGNER_PK, oracle.resultDigest(pendingId, keccak256(output), MODEL));
        bytes memory data = abi.encodeCall(InferenceOracle.fulfill, (pendingId, output, s));
        uint256 id = pendingId;
        vm.prank(operator);
        uint256 g = gasleft();
        oracle.fulfill(id, output, s);
        g -= gasleft();
        report("InferenceOracle.fulfill (no callback)", g, data);
    }

    function test_gas_fulfillWithCallback() public {
        bytes memory output = OUTPUT;
        bytes memory s = sig(SIGNER_PK, oracle.resultDigest(pendingCbId, keccak256(output), MODEL));
        bytes memory data = abi.encodeCall(InferenceOracle.fulfill, (pendingCbId, output, s));
        uint256 id = pendingCbId;
        vm.prank(operator);
        uint256 g = gasleft();
        oracle.fulfill(id, output, s);
        g -= gasleft();
        report("InferenceOracle.fulfill (ExampleConsumer callback stores the 6-byte answer)", g, data);
    }
}
