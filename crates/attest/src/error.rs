//! Errors of evidence collection, quote decoding and collateral handling.
//!
//! Verification itself never returns an error: a failed verification is a verdict with a failing,
//! named check (see [`crate::verify`]). These errors are for the steps before and around it.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong in this crate outside a verdict.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The input was empty.
    #[error("quote is empty")]
    EmptyQuote,
    /// The input is larger than any quote this crate accepts.
    #[error("quote is {len} bytes; the limit is {max}")]
    QuoteTooLarge {
        /// Bytes received.
        len: usize,
        /// The limit ([`crate::quote::MAX_QUOTE_BYTES`]).
        max: usize,
    },
    /// The input looked like hex (ASCII) but was not valid hex.
    #[error("quote looks hex-encoded but is not valid hex: {0}")]
    QuoteHex(#[from] hex::FromHexError),
    /// The quote ends before a structure it announces.
    #[error("quote truncated: {what} needs bytes {start}..{end}, but the quote has {len}")]
    QuoteTruncated {
        /// Which structure was cut.
        what: &'static str,
        /// Where it starts.
        start: usize,
        /// Where it ends.
        end: usize,
        /// The length of the input.
        len: usize,
    },
    /// The quote header's version is not 3, 4 or 5.
    #[error("unsupported quote version {0} (expected 3, 4 or 5)")]
    UnsupportedQuoteVersion(u16),
    /// The header's TEE type is neither SGX (0) nor TDX (0x81), or does not fit the version.
    #[error("unsupported TEE type {tee_type:#x} for a version {version} quote")]
    UnsupportedTeeType {
        /// Header version.
        version: u16,
        /// Header TEE type.
        tee_type: u32,
    },
    /// A v5 quote's body descriptor names an unknown body type.
    #[error("unsupported v5 quote body type {0} (expected 1 SGX, 2 TD 1.0 or 3 TD 1.5)")]
    UnsupportedBodyType(u16),
    /// A v5 quote's body descriptor gives a size that does not match its type.
    #[error("v5 quote body type {body_type} must be {expected} bytes, the descriptor says {size}")]
    BodySizeMismatch {
        /// Body type.
        body_type: u16,
        /// The size the type requires.
        expected: usize,
        /// The size in the descriptor.
        size: u32,
    },
    /// Collateral JSON did not parse as dcap-qvl's `QuoteCollateralV3`.
    #[error("collateral is not valid QuoteCollateralV3 JSON: {0}")]
    CollateralJson(#[source] serde_json::Error),
    /// A certificate (e.g. the TLS certificate a report binds) did not parse.
    #[error("bad certificate: {0}")]
    BadCertificate(String),
    /// The quote's PCK certificate data could not be used to find FMSPC and CA (dcap-qvl's text).
    #[error("cannot read the PCK certificate in the quote: {0}")]
    PckCertificate(String),
    /// The quote does not embed its PCK certificate chain (certification data type 5).
    #[error(
        "quote certification data type {0} does not embed the PCK certificate chain (type 5); \
         fetching a PCK certificate by encrypted PPID is not supported"
    )]
    UnsupportedCertificationData(u16),
    /// A collateral request failed on the network.
    #[error("request to {url} failed: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// What the HTTP client said.
        reason: String,
    },
    /// A collateral server answered with a non-success status.
    #[error("{url} answered HTTP {status}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// A collateral response lacked a required header.
    #[error("{url} answered without the {header} header")]
    MissingHeader {
        /// The URL.
        url: String,
        /// The header that was expected.
        header: &'static str,
    },
    /// A collateral response body was malformed.
    #[error("malformed response from {url}: {reason}")]
    BadCollateralResponse {
        /// The URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// No TEE evidence source was found and simulation was not requested.
    #[error(
        "no TEE found: no dstack guest-agent socket and no configfs-tsm report directory \
         (is this a TDX guest?); for development only, `--dev-simulated-tee` runs with simulated, \
         NOT SECURE evidence that every verifier refuses by default"
    )]
    NoTee,
    /// The configfs-tsm report directory does not exist.
    #[error(
        "configfs-tsm report directory {0} does not exist (not a TDX guest, or configfs/tsm not mounted)"
    )]
    ConfigfsMissing(PathBuf),
    /// A file-system operation on configfs-tsm failed.
    #[error("configfs-tsm: {op} {path}: {source}")]
    Configfs {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another writer used the same configfs-tsm entry while we generated a quote.
    #[error(
        "configfs-tsm generation went from {before} to {after} around one write: another writer \
         raced this report; the quote is discarded"
    )]
    ConcurrentReport {
        /// `generation` before writing inblob.
        before: u64,
        /// `generation` after reading outblob.
        after: u64,
    },
    /// configfs-tsm is served by a provider other than TDX.
    #[error("configfs-tsm provider is {0:?}, expected \"tdx_guest\"")]
    UnsupportedTsmProvider(String),
    /// configfs-tsm did not produce a quote in time.
    #[error("configfs-tsm: no quote in {path} after {waited_ms} ms")]
    ConfigfsTimeout {
        /// The attribute being waited for.
        path: PathBuf,
        /// How long we waited.
        waited_ms: u128,
    },
    /// A configfs-tsm attribute held something unexpected.
    #[error("configfs-tsm: {path} holds {content:?}, expected {expected}")]
    ConfigfsAttribute {
        /// The attribute.
        path: PathBuf,
        /// What it held (truncated).
        content: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The dstack guest agent failed or answered something unusable.
    #[error("dstack guest agent: {0}")]
    Dstack(String),
    /// The evidence source returned a quote whose report_data is not the one requested.
    #[error("the quote's report_data {got} is not the requested {want}")]
    ReportDataMismatch {
        /// Requested, hex.
        want: String,
        /// In the quote, hex.
        got: String,
    },
    /// A derived key was not a valid secp256k1 secret.
    #[error("derived signing key is invalid: {0}")]
    DerivedKey(#[source] cloister_crypto::Error),
    /// OS measurements JSON did not parse ([`crate::measure::OsMeasurements::from_json`]).
    #[error("OS measurements are not valid JSON: {0}")]
    MeasurementJson(#[source] serde_json::Error),
    /// An OS measurement register is missing or is not 48 bytes of hex.
    #[error("OS measurement {field}: {reason}")]
    BadMeasurement {
        /// The register (`mrtd`, `rtmr0`, `rtmr1`, `rtmr2`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A report holds no dstack attestation (a quote next to `info.tcb_info.app_compose`).
    #[error(
        "the report holds no dstack attestation: no object with a quote (intel_quote or quote) \
         and info.tcb_info.app_compose"
    )]
    NoDstackAttestation,
    /// An SGX quote was given where a TD's MRTD and RTMRs are needed.
    #[error("the quote is an SGX quote: it has no MRTD or RTMRs")]
    NoRtmrs,
    /// A blocking task was cancelled or panicked.
    #[error("background task failed: {0}")]
    Task(String),
    /// GPU evidence could not be collected.
    #[cfg(feature = "collect")]
    #[error("GPU evidence: {0}")]
    Gpu(#[from] crate::collect::gpu::GpuError),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
