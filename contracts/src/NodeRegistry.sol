// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {IQuoteVerifier} from "./IQuoteVerifier.sol";

/// @title NodeRegistry
/// @notice Registry of attested Cloister nodes (DESIGN "Registration"). An operator registers with a
///         TDX quote whose report_data binds the node's signing address and a nonce over
///         (chain id, registry, operator, attestation count); the quote is checked by an IQuoteVerifier
///         against governance allowlists of measurements and TCB statuses. The signer becomes the key
///         that signs vouchers (Escrow) and results (InferenceOracle). Operators stake the stake token;
///         deregistering starts an unbonding delay during which the owner can still slash.
/// @dev TCB statuses use Automata's numbering (see IQuoteVerifier); none is accepted by default.
///      Measurement allowlist changes are timelocked (see "measurement governance" below): the owner
///      announces a change, anyone applies it once `measurementDelay` has passed, the owner may cancel
///      it before then. Operators and clients list pending changes with `pendingMeasurements`.
contract NodeRegistry is Ownable2Step {
    using SafeERC20 for IERC20;

    /// @notice Price of one model, in stake/payment token units per token (input and output).
    struct ModelPrice {
        string id;
        uint256 inputPrice;
        uint256 outputPrice;
    }

    /// @notice An announced, not yet applied change to the measurement allowlist.
    /// @dev `eta` is never zero for a pending change (it is at least the announcing block's time).
    struct PendingMeasurement {
        bytes32 measurement;
        bool allowed;
        uint64 eta;
    }

    /// @notice Everything known about a node.
    /// @dev `active` is true from registration until deregistration; see `isActive` for the full rule.
    struct NodeInfo {
        address operator;
        address signer;
        string endpoint;
        bytes32 measurement;
        uint8 tcbStatus;
        uint64 attestedAt;
        uint256 stake;
        uint64 unbondingEnds;
        bool active;
        ModelPrice[] models;
    }

    /// @notice Most models a node may list.
    uint256 public constant MAX_MODELS = 16;
    /// @notice Longest model id, in bytes.
    uint256 public constant MAX_MODEL_ID_LENGTH = 128;
    /// @notice Longest endpoint URL, in bytes.
    uint256 public constant MAX_ENDPOINT_LENGTH = 256;
    /// @notice Most nodes `listNodes` returns per call.
    uint256 public constant MAX_PAGE = 100;
    /// @notice Most measurement changes pending at once (bounds `pendingMeasurements`).
    uint256 public constant MAX_PENDING_MEASUREMENTS = 32;
    /// @notice Longest `measurementDelay` (keeps `block.timestamp + delay` far from overflow and
    ///         governance from locking itself out).
    uint64 public constant MAX_MEASUREMENT_DELAY = 365 days;

    /// @notice Token staked by operators.
    IERC20 public immutable stakeToken;
    /// @notice Delay between `deregister` and `withdrawStake`.
    uint64 public immutable unbondingDelay;

    /// @notice Current quote verifier.
    IQuoteVerifier public verifier;
    /// @notice Least stake to register.
    uint256 public minStake;
    /// @notice A node is active only while `attestedAt + maxAge >= block.timestamp`.
    uint64 public maxAge;
    /// @notice Least time between announcing a measurement allowlist change and applying it.
    uint64 public measurementDelay;
    /// @notice A pending lowering of `measurementDelay` (zero `eta`: none); see `announceMeasurementDelay`.
    uint64 public pendingMeasurementDelay;
    /// @notice When `pendingMeasurementDelay` may be applied (zero: nothing pending).
    uint64 public pendingMeasurementDelayEta;

    /// @notice Allowlisted measurement digests.
    mapping(bytes32 measurement => bool allowed) public measurementAllowed;
    /// @notice Accepted TCB statuses (Automata numbering).
    mapping(uint8 status => bool accepted) public tcbStatusAccepted;
    /// @notice Number of successful attestations (register or reattest) per operator; part of the nonce.
    mapping(address operator => uint256 count) public attestCount;

    PendingMeasurement[] private _pending;
    mapping(bytes32 measurement => uint256 indexPlusOne) private _pendingIndex;

    mapping(address operator => NodeInfo) private _nodes;
    address[] private _operators;
    mapping(address operator => uint256 indexPlusOne) private _index;

    event MeasurementSet(bytes32 indexed measurement, bool allowed);
    event MeasurementChangeAnnounced(bytes32 indexed measurement, bool allowed, uint64 eta);
    event MeasurementChangeCancelled(bytes32 indexed measurement);
    event MeasurementDelaySet(uint64 delay);
    event MeasurementDelayChangeAnnounced(uint64 delay, uint64 eta);
    event MeasurementDelayChangeCancelled(uint64 delay);
    event TcbStatusSet(uint8 status, bool accepted);
    event MaxAgeSet(uint64 maxAge);
    event VerifierSet(address indexed verifier);
    event MinStakeSet(uint256 minStake);
    event NodeRegistered(address indexed operator, address indexed signer, bytes32 measurement, string endpoint);
    event NodeReattested(address indexed operator, address indexed signer, bytes32 measurement);
    event ModelsUpdated(address indexed operator);
    event Deregistered(address indexed operator, uint64 unbondingEnds);
    event StakeWithdrawn(address indexed operator, uint256 amount);
    event Slashed(address indexed operator, uint256 amount, address indexed to, string reason);

    /// @notice The quote's measurement is not on the allowlist.
    error UnapprovedMeasurement(bytes32 measurement);
    /// @notice The quote's TCB status is not accepted.
    error TcbStatusNotAccepted(uint8 status);
    /// @notice report_data is not 64 bytes, or its bytes 20..32 are not zero, or its signer is zero.
    error BadReportData();
    /// @notice report_data bytes 32..64 are not `attestationNonce(operator)`.
    error BadNonce();
    /// @notice The operator already has a node (possibly unbonding; withdraw first).
    error AlreadyRegistered();
    /// @notice The operator has no node.
    error NotRegistered();
    /// @notice The node is unbonding; it cannot change.
    error NodeUnbonding();
    /// @notice `withdrawStake` before `deregister`.
    error NotUnbonding();
    /// @notice `withdrawStake` before `unbondingEnds`.
    error StillUnbonding(uint64 unbondingEnds);
    /// @notice Stake below `minStake`.
    error StakeTooLow(uint256 stake, uint256 minStake);
    /// @notice More than MAX_MODELS models.
    error TooManyModels(uint256 count);
    /// @notice A model id is empty or longer than MAX_MODEL_ID_LENGTH.
    error BadModelId(string id);
    /// @notice A model id is listed twice.
    error DuplicateModel(string id);
    /// @notice Endpoint empty or longer than MAX_ENDPOINT_LENGTH.
    error BadEndpoint();
    /// @notice Slash larger than the node's stake.
    error SlashTooLarge(uint256 amount, uint256 stake);
    /// @notice A zero address where one is not allowed.
    error ZeroAddress();
    /// @notice `listNodes` limit above MAX_PAGE.
    error PageTooLarge(uint256 limit);
    /// @notice A change for this measurement is already pending (execute or cancel it first).
    error ChangeAlreadyPending(bytes32 measurement);
    /// @notice No change is pending for this measurement.
    error NoPendingChange(bytes32 measurement);
    /// @notice The pending change may be applied only from `eta`.
    error TooEarly(uint64 eta);
    /// @notice MAX_PENDING_MEASUREMENTS changes are already pending.
    error TooManyPendingChanges();
    /// @notice A delay above MAX_MEASUREMENT_DELAY.
    error DelayTooLong(uint64 delay);
    /// @notice A lowering of `measurementDelay` is already pending.
    error DelayChangeAlreadyPending();
    /// @notice No lowering of `measurementDelay` is pending.
    error NoPendingDelayChange();

    /// @param owner_ Governance (Ownable2Step).
    /// @param stakeToken_ Token staked by operators.
    /// @param verifier_ Quote verifier.
    /// @param minStake_ Least stake to register.
    /// @param maxAge_ Longest time an attestation keeps a node active.
    /// @param unbondingDelay_ Delay between deregistration and stake withdrawal.
    /// @param measurementDelay_ Timelock on measurement allowlist changes (0 on dev chains: announce and
    ///        execute in one block).
    constructor(
        address owner_,
        IERC20 stakeToken_,
        IQuoteVerifier verifier_,
        uint256 minStake_,
        uint64 maxAge_,
        uint64 unbondingDelay_,
        uint64 measurementDelay_
    ) Ownable(owner_) {
        if (address(stakeToken_) == address(0) || address(verifier_) == address(0)) revert ZeroAddress();
        if (measurementDelay_ > MAX_MEASUREMENT_DELAY) revert DelayTooLong(measurementDelay_);
        measurementDelay = measurementDelay_;
        emit MeasurementDelaySet(measurementDelay_);
        stakeToken = stakeToken_;
        verifier = verifier_;
        minStake = minStake_;
        maxAge = maxAge_;
        unbondingDelay = unbondingDelay_;
        emit VerifierSet(address(verifier_));
        emit MinStakeSet(minStake_);
        emit MaxAgeSet(maxAge_);
    }

    // ---------------------------------------------------------------- measurement governance

    /// @notice Announces that `measurement` will be allowed (or disallowed) from
    ///         `eta = block.timestamp + measurementDelay`. At most one change per measurement is pending;
    ///         at most MAX_PENDING_MEASUREMENTS in all.
    function announceMeasurement(bytes32 measurement, bool allowed) external onlyOwner {
        if (_pendingIndex[measurement] != 0) revert ChangeAlreadyPending(measurement);
        if (_pending.length >= MAX_PENDING_MEASUREMENTS) revert TooManyPendingChanges();
        uint64 eta = uint64(block.timestamp) + measurementDelay;
        _pending.push(PendingMeasurement(measurement, allowed, eta));
        _pendingIndex[measurement] = _pending.length;
        emit MeasurementChangeAnnounced(measurement, allowed, eta);
    }

    /// @notice Applies the pending change for `measurement` (anyone may call, from its `eta`; with a
    ///         zero delay, in the announcing block). Emits `MeasurementSet`.
    function executeMeasurement(bytes32 measurement) external {
        uint256 ip1 = _pendingIndex[measurement];
        if (ip1 == 0) revert NoPendingChange(measurement);
        PendingMeasurement memory p = _pending[ip1 - 1];
        if (block.timestamp < p.eta) revert TooEarly(p.eta);
        _removePending(measurement, ip1);
        measurementAllowed[measurement] = p.allowed;
        emit MeasurementSet(measurement, p.allowed);
    }

    /// @notice Drops the pending change for `measurement` (owner, any time before it is executed).
    function cancelMeasurement(bytes32 measurement) external onlyOwner {
        uint256 ip1 = _pendingIndex[measurement];
        if (ip1 == 0) revert NoPendingChange(measurement);
        _removePending(measurement, ip1);
        emit MeasurementChangeCancelled(measurement);
    }

    /// @notice Changes `measurementDelay`. Raising (or keeping) it applies at once and drops any pending
    ///         lowering; lowering it is itself timelocked by the current delay: it is recorded as
    ///         `pendingMeasurementDelay`, applied by `executeMeasurementDelay` from
    ///         `block.timestamp + measurementDelay`, and may be cancelled. Changes announced before a
    ///         delay change keep their eta.
    function announceMeasurementDelay(uint64 delay) external onlyOwner {
        if (delay > MAX_MEASUREMENT_DELAY) revert DelayTooLong(delay);
        if (delay >= measurementDelay) {
            if (pendingMeasurementDelayEta != 0) {
                emit MeasurementDelayChangeCancelled(pendingMeasurementDelay);
                pendingMeasurementDelay = 0;
                pendingMeasurementDelayEta = 0;
            }
            measurementDelay = delay;
            emit MeasurementDelaySet(delay);
            return;
        }
        if (pendingMeasurementDelayEta != 0) revert DelayChangeAlreadyPending();
        uint64 eta = uint64(block.timestamp) + measurementDelay;
        pendingMeasurementDelay = delay;
        pendingMeasurementDelayEta = eta;
        emit MeasurementDelayChangeAnnounced(delay, eta);
    }

    /// @notice Applies the pending lowering of `measurementDelay` (anyone may call, from its eta).
    function executeMeasurementDelay() external {
        uint64 eta = pendingMeasurementDelayEta;
        if (eta == 0) revert NoPendingDelayChange();
        if (block.timestamp < eta) revert TooEarly(eta);
        uint64 delay = pendingMeasurementDelay;
        pendingMeasurementDelay = 0;
        pendingMeasurementDelayEta = 0;
        measurementDelay = delay;
        emit MeasurementDelaySet(delay);
    }

    /// @notice Drops the pending lowering of `measurementDelay` (owner).
    function cancelMeasurementDelay() external onlyOwner {
        if (pendingMeasurementDelayEta == 0) revert NoPendingDelayChange();
        uint64 delay = pendingMeasurementDelay;
        pendingMeasurementDelay = 0;
        pendingMeasurementDelayEta = 0;
        emit MeasurementDelayChangeCancelled(delay);
    }

    /// @notice Every pending measurement change (at most MAX_PENDING_MEASUREMENTS), in no fixed order
    ///         (removing one moves the last into its place).
    function pendingMeasurements() external view returns (PendingMeasurement[] memory) {
        return _pending;
    }

    /// @notice The pending change for `measurement`, if any.
    function pendingMeasurement(bytes32 measurement) external view returns (bool pending, bool allowed, uint64 eta) {
        uint256 ip1 = _pendingIndex[measurement];
        if (ip1 == 0) return (false, false, 0);
        PendingMeasurement storage p = _pending[ip1 - 1];
        return (true, p.allowed, p.eta);
    }

    // ---------------------------------------------------------------- governance

    /// @notice Accepts or refuses a TCB status (Automata numbering).
    function setTcbStatus(uint8 status, bool accepted) external onlyOwner {
        tcbStatusAccepted[status] = accepted;
        emit TcbStatusSet(status, accepted);
    }

    /// @notice Sets the attestation freshness window.
    function setMaxAge(uint64 maxAge_) external onlyOwner {
        maxAge = maxAge_;
        emit MaxAgeSet(maxAge_);
    }

    /// @notice Replaces the quote verifier.
    function setVerifier(IQuoteVerifier verifier_) external onlyOwner {
        if (address(verifier_) == address(0)) revert ZeroAddress();
        verifier = verifier_;
        emit VerifierSet(address(verifier_));
    }

    /// @notice Sets the least stake for new registrations (existing nodes keep theirs).
    function setMinStake(uint256 minStake_) external onlyOwner {
        minStake = minStake_;
        emit MinStakeSet(minStake_);
    }

    /// @notice Takes `amount` of an operator's stake (also while unbonding) and sends it to `to`.
    function slash(address operator, uint256 amount, address to, string calldata reason) external onlyOwner {
        NodeInfo storage n = _nodes[operator];
        if (n.operator == address(0)) revert NotRegistered();
        if (to == address(0)) revert ZeroAddress();
        if (amount > n.stake) revert SlashTooLarge(amount, n.stake);
        n.stake -= amount;
        stakeToken.safeTransfer(to, amount);
        emit Slashed(operator, amount, to, reason);
    }

    // ---------------------------------------------------------------- operators

    /// @notice The nonce an operator's next quote must carry in report_data[32:64].
    function attestationNonce(address operator) public view returns (bytes32) {
        return keccak256(abi.encode(block.chainid, address(this), operator, attestCount[operator]));
    }

    /// @notice Registers the caller's node. Pulls `stake` (approve first).
    /// @param quote TDX quote with report_data = signer ‖ 0^12 ‖ attestationNonce(msg.sender).
    /// @param endpoint Public URL of the node's API.
    /// @param models Served models and prices (at most 16, ids unique).
    /// @param stake Stake to pull, at least `minStake`.
    function register(bytes calldata quote, string calldata endpoint, ModelPrice[] calldata models, uint256 stake)
        external
    {
        NodeInfo storage n = _nodes[msg.sender];
        if (n.operator != address(0)) revert AlreadyRegistered();
        _checkEndpoint(endpoint);
        if (stake < minStake) revert StakeTooLow(stake, minStake);
        (address signer, IQuoteVerifier.QuoteInfo memory info) = _attest(quote);

        n.operator = msg.sender;
        n.signer = signer;
        n.endpoint = endpoint;
        n.measurement = info.measurement;
        n.tcbStatus = info.tcbStatus;
        n.attestedAt = uint64(block.timestamp);
        n.stake = stake;
        n.active = true;
        _setModels(n, models);
        _operators.push(msg.sender);
        _index[msg.sender] = _operators.length;

        stakeToken.safeTransferFrom(msg.sender, address(this), stake);
        emit NodeRegistered(msg.sender, signer, info.measurement, endpoint);
    }

    /// @notice Refreshes the caller's attestation: new signer, measurement, TCB status and time.
    function reattest(bytes calldata quote) external {
        NodeInfo storage n = _liveNode(msg.sender);
        (address signer, IQuoteVerifier.QuoteInfo memory info) = _attest(quote);
        n.signer = signer;
        n.measurement = info.measurement;
        n.tcbStatus = info.tcbStatus;
        n.attestedAt = uint64(block.timestamp);
        emit NodeReattested(msg.sender, signer, info.measurement);
    }

    /// @notice Replaces the caller's model list.
    function updateModels(ModelPrice[] calldata models) external {
        NodeInfo storage n = _liveNode(msg.sender);
        delete n.models;
        _setModels(n, models);
        emit ModelsUpdated(msg.sender);
    }

    /// @notice Starts unbonding: the node is inactive from now and its stake can be withdrawn after
    ///         `unbondingDelay`. Its signer stays known (so vouchers can still be settled) until then.
    function deregister() external {
        NodeInfo storage n = _liveNode(msg.sender);
        uint64 ends = uint64(block.timestamp) + unbondingDelay;
        n.unbondingEnds = ends;
        n.active = false;
        emit Deregistered(msg.sender, ends);
    }

    /// @notice After unbonding, returns the remaining stake and removes the node.
    function withdrawStake() external {
        NodeInfo storage n = _nodes[msg.sender];
        if (n.operator == address(0)) revert NotRegistered();
        uint64 ends = n.unbondingEnds;
        if (ends == 0) revert NotUnbonding();
        if (block.timestamp < ends) revert StillUnbonding(ends);
        uint256 amount = n.stake;
        _remove(msg.sender);
        if (amount > 0) stakeToken.safeTransfer(msg.sender, amount);
        emit StakeWithdrawn(msg.sender, amount);
    }

    // ---------------------------------------------------------------- views

    /// @notice True if registered, not unbonding, and attested within `maxAge`.
    function isActive(address operator) public view returns (bool) {
        NodeInfo storage n = _nodes[operator];
        return n.active && n.unbondingEnds == 0 && uint256(n.attestedAt) + maxAge >= block.timestamp;
    }

    /// @notice The node's current signing address (zero if none). Kept while unbonding.
    function signerOf(address operator) external view returns (address) {
        return _nodes[operator].signer;
    }

    /// @notice Whether the node lists `model`, and its prices.
    function priceOf(address operator, string calldata model)
        external
        view
        returns (bool served, uint256 inputPrice, uint256 outputPrice)
    {
        ModelPrice[] storage ms = _nodes[operator].models;
        bytes32 h = keccak256(bytes(model));
        uint256 len = ms.length;
        for (uint256 i; i < len; ++i) {
            if (keccak256(bytes(ms[i].id)) == h) return (true, ms[i].inputPrice, ms[i].outputPrice);
        }
        return (false, 0, 0);
    }

    /// @notice Everything about a node (all zero if none).
    function getNode(address operator) external view returns (NodeInfo memory) {
        return _nodes[operator];
    }

    /// @notice Number of nodes (including unbonding ones not yet withdrawn).
    function nodeCount() external view returns (uint256) {
        return _operators.length;
    }

    /// @notice Nodes `offset .. offset+limit` (at most MAX_PAGE; fewer at the end). Order changes when a
    ///         node is removed (the last one takes its place).
    function listNodes(uint256 offset, uint256 limit) external view returns (NodeInfo[] memory page) {
        if (limit > MAX_PAGE) revert PageTooLarge(limit);
        uint256 total = _operators.length;
        if (offset >= total) return new NodeInfo[](0);
        uint256 end = offset + limit > total ? total : offset + limit;
        page = new NodeInfo[](end - offset);
        for (uint256 i = offset; i < end; ++i) {
            page[i - offset] = _nodes[_operators[i]];
        }
    }

    // ---------------------------------------------------------------- internals

    function _liveNode(address operator) private view returns (NodeInfo storage n) {
        n = _nodes[operator];
        if (n.operator == address(0)) revert NotRegistered();
        if (n.unbondingEnds != 0) revert NodeUnbonding();
    }

    /// @dev Verifies the quote and the policy; returns the signer. Increments attestCount.
    function _attest(bytes calldata quote) private returns (address signer, IQuoteVerifier.QuoteInfo memory info) {
        info = verifier.verifyQuote(quote);
        if (!measurementAllowed[info.measurement]) revert UnapprovedMeasurement(info.measurement);
        if (!tcbStatusAccepted[info.tcbStatus]) revert TcbStatusNotAccepted(info.tcbStatus);
        bytes memory rd = info.reportData;
        if (rd.length != 64) revert BadReportData();
        bytes32 w0;
        bytes32 nonce;
        assembly ("memory-safe") {
            w0 := mload(add(rd, 0x20))
            nonce := mload(add(rd, 0x40))
        }
        signer = address(bytes20(w0));
        if (uint256(w0) & type(uint96).max != 0 || signer == address(0)) revert BadReportData();
        if (nonce != attestationNonce(msg.sender)) revert BadNonce();
        attestCount[msg.sender] += 1;
    }

    function _checkEndpoint(string calldata endpoint) private pure {
        uint256 len = bytes(endpoint).length;
        if (len == 0 || len > MAX_ENDPOINT_LENGTH) revert BadEndpoint();
    }

    function _setModels(NodeInfo storage n, ModelPrice[] calldata models) private {
        uint256 len = models.length;
        if (len > MAX_MODELS) revert TooManyModels(len);
        bytes32[] memory seen = new bytes32[](len);
        for (uint256 i; i < len; ++i) {
            string calldata id = models[i].id;
            uint256 idLen = bytes(id).length;
            if (idLen == 0 || idLen > MAX_MODEL_ID_LENGTH) revert BadModelId(id);
            bytes32 h = keccak256(bytes(id));
            for (uint256 j; j < i; ++j) {
                if (seen[j] == h) revert DuplicateModel(id);
            }
            seen[i] = h;
            n.models.push(models[i]);
        }
    }

    function _removePending(bytes32 measurement, uint256 indexPlusOne) private {
        uint256 idx = indexPlusOne - 1;
        uint256 last = _pending.length - 1;
        if (idx != last) {
            PendingMeasurement memory moved = _pending[last];
            _pending[idx] = moved;
            _pendingIndex[moved.measurement] = idx + 1;
        }
        _pending.pop();
        delete _pendingIndex[measurement];
    }

    function _remove(address operator) private {
        uint256 idx = _index[operator] - 1;
        uint256 last = _operators.length - 1;
        if (idx != last) {
            address moved = _operators[last];
            _operators[idx] = moved;
            _index[moved] = idx + 1;
        }
        _operators.pop();
        delete _index[operator];
        delete _nodes[operator].models;
        delete _nodes[operator];
    }
}
