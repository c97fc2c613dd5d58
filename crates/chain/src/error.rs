use alloy::primitives::{Address, B256, Bytes};

/// Errors from talking to the chain or running a devnet.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A call or transaction reverted with a custom error of one of our contracts (or OpenZeppelin's),
    /// decoded by name: match on `name` (`"VoucherAlreadySettled"`, `"UnapprovedMeasurement"`, ...).
    #[error("reverted: {name}({args})")]
    Reverted {
        /// The Solidity error name.
        name: String,
        /// Its arguments, formatted, comma-separated.
        args: String,
        /// The raw revert data.
        data: Bytes,
    },
    /// A revert whose data matches no known error (or carries none).
    #[error("reverted with unknown data 0x{}", alloy::primitives::hex::encode(.data))]
    RevertedUnknown {
        /// The raw revert data (possibly empty).
        data: Bytes,
    },
    /// A transaction was mined but failed (status 0).
    #[error("transaction {tx_hash} failed on chain")]
    TxFailed {
        /// Its hash.
        tx_hash: B256,
    },
    /// No receipt arrived in time.
    #[error("no receipt for {tx_hash} after {}s", crate::RECEIPT_TIMEOUT.as_secs())]
    ReceiptTimeout {
        /// The transaction.
        tx_hash: B256,
    },
    /// The RPC endpoint answered with an error, or could not be reached.
    #[error("RPC error: {0}")]
    Rpc(#[from] alloy::transports::TransportError),
    /// Waiting for a transaction's receipt failed.
    #[error("waiting for receipt: {0}")]
    Receipt(#[from] alloy::providers::PendingTransactionError),
    /// A contract call failed in another way (no data, ABI mismatch, not deployed).
    #[error("contract call: {0}")]
    Contract(alloy::contract::Error),
    /// An answer could not be decoded as the ABI says.
    #[error("ABI decoding: {0}")]
    Abi(#[from] alloy::sol_types::Error),
    /// The RPC endpoint serves another chain than the configuration names.
    #[error("RPC endpoint is chain {actual}, configuration says {expected}")]
    WrongChain {
        /// Chain id from the configuration.
        expected: u64,
        /// Chain id the endpoint reports.
        actual: u64,
    },
    /// Sending needs a key and none was given.
    #[error("this operation sends a transaction; no private key was given")]
    NoSigner,
    /// A one-step measurement change on a registry whose changes are timelocked.
    #[error(
        "measurement changes are timelocked ({delay}s): announce the change, then execute it after the delay"
    )]
    MeasurementTimelocked {
        /// The registry's `measurementDelay` (seconds).
        delay: u64,
    },
    /// A transaction receipt lacked the event it must carry.
    #[error("receipt of {tx_hash} has no {event} event")]
    MissingEvent {
        /// Transaction hash.
        tx_hash: B256,
        /// Expected event name.
        event: &'static str,
    },
    /// A deployment produced no contract address.
    #[error("deployment of {0} returned no address")]
    NoContractAddress(&'static str),
    /// A private key was malformed.
    #[error("malformed private key")]
    BadPrivateKey,
    /// An RPC URL was malformed.
    #[error("malformed RPC URL {0:?}")]
    BadRpcUrl(String),
    /// A config file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A config file was not the expected JSON.
    #[error("{path}: {source}")]
    ConfigJson {
        /// The file.
        path: String,
        /// What went wrong.
        source: serde_json::Error,
    },
    /// A config names a contract this operation needs, but its address is zero or missing.
    #[error("configuration has no {0} address")]
    MissingContract(&'static str),
    /// anvil could not be found or started.
    #[error("anvil: {0}")]
    Anvil(String),
    /// A node the caller asked about is not registered.
    #[error("operator {0} is not registered")]
    NotRegistered(Address),
    /// A user's amount is not a number of whole tokens with at most the token's decimals.
    #[error("amount {text:?} is not a token amount (e.g. 10 or 0.5; at most {decimals} decimals)")]
    BadAmount {
        /// What was given.
        text: String,
        /// The token's decimals.
        decimals: u8,
    },
    /// A production deployment needs a quote verifier and the network file names no Automata DCAP
    /// contract for it.
    #[error(
        "network {0} names no automata_dcap_verifier: give one (--automata) to deploy the production quote verifier"
    )]
    NoQuoteVerifier(String),
    /// `--network` names no shipped network (and no network file).
    #[error("no network named {name:?} (shipped: {known}; or give the path of a network file)")]
    UnknownNetwork {
        /// The name given.
        name: String,
        /// The shipped networks, comma-separated.
        known: String,
    },
    /// A network file does not parse, or a field is out of range.
    #[error("network file {path}: {reason}")]
    NetworkFile {
        /// The file (or `networks/<name>.toml` for a shipped one).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The provider refuses `eth_getLogs` even for one block: the scan cannot proceed.
    #[error("eth_getLogs refused for the single block {block}: {message}")]
    LogRangeRefused {
        /// The block.
        block: u64,
        /// The provider's error.
        message: String,
    },
    /// The chain's base fee alone is above the network's fee cap: a transaction within the cap
    /// would never mine, so none is sent.
    #[error("base fee {base_fee} wei/gas is above the network's max_fee_per_gas_wei cap {cap}: not sending")]
    BaseFeeAboveCap {
        /// The latest block's base fee (wei per gas).
        base_fee: u128,
        /// The cap (wei per gas).
        cap: u128,
    },
    /// The token declares more decimals than an amount can carry.
    #[error("the token declares {0} decimals (at most 77 are supported)")]
    BadDecimals(u8),
}

impl ChainError {
    /// The Solidity error name if this is a decoded revert.
    pub fn revert_name(&self) -> Option<&str> {
        match self {
            Self::Reverted { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = ChainError> = std::result::Result<T, E>;
