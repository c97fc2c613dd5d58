//! TDX evidence from a dstack CVM's guest agent (through `dstack-sdk`).
//!
//! `GetQuote` puts report_data into the TD report unchanged (the raw path, not tappd's hashed
//! one) and returns the quote with the RTMR event log; `Info` describes the app (compose hash,
//! measurements); `GetKey` derives a key from the app's identity in the KMS, so a node keeps its
//! signing key across restarts and migrations of the same app.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use cloister_crypto::EnclaveKey;
use cloister_types::{ReportData, TeeKind};
use dstack_sdk::dstack_client::DstackClient;
use zeroize::Zeroizing;

use super::{Attester, Evidence, check_report_data};
use crate::{Error, Result};

/// Where the guest agent's socket is found, in the order dstack-sdk tries them.
pub const DEFAULT_SOCKETS: [&str; 4] = [
    "/var/run/dstack.sock",
    "/run/dstack.sock",
    "/var/run/dstack/dstack.sock",
    "/run/dstack/dstack.sock",
];

/// `GetKey` path of the node's signing key.
pub const SIGNING_KEY_PATH: &str = "cloister/signing-key";
/// `GetKey` purpose of the node's signing key.
pub const SIGNING_KEY_PURPOSE: &str = "signing";

/// Evidence from the dstack guest agent at a Unix socket.
pub struct DstackAttester {
    socket: PathBuf,
    client: DstackClient,
}

impl std::fmt::Debug for DstackAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DstackAttester")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl DstackAttester {
    /// Talks to the guest agent at `socket` (e.g. `/var/run/dstack.sock`).
    pub fn new(socket: impl AsRef<Path>) -> Self {
        let socket = socket.as_ref().to_path_buf();
        let client = DstackClient::new(Some(&socket.to_string_lossy()));
        Self { socket, client }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

fn agent_error(call: &str, e: impl std::fmt::Display) -> Error {
    Error::Dstack(format!("{call}: {e:#}"))
}

#[async_trait]
impl Attester for DstackAttester {
    fn tee(&self) -> TeeKind {
        TeeKind::Dstack
    }

    async fn evidence(&self, report_data: &ReportData) -> Result<Evidence> {
        let resp = self
            .client
            .get_quote(report_data.0.to_vec())
            .await
            .map_err(|e| agent_error("GetQuote", e))?;
        let quote = crate::quote::decode_quote_bytes(resp.quote.as_bytes())
            .map_err(|e| Error::Dstack(format!("GetQuote returned an unusable quote: {e}")))?;
        check_report_data(&quote, report_data)?;
        // The event log arrives as JSON text inside the JSON response.
        let event_log = if resp.event_log.trim().is_empty() {
            serde_json::Value::Array(Vec::new())
        } else {
            serde_json::from_str(&resp.event_log)
                .map_err(|e| Error::Dstack(format!("GetQuote event_log is not JSON: {e}")))?
        };
        let info = self.client.info().await.map_err(|e| agent_error("Info", e))?;
        let info = serde_json::to_value(info).map_err(|e| agent_error("Info", e))?;
        Ok(Evidence {
            quote,
            event_log,
            info,
        })
    }

    async fn derived_signing_key(&self) -> Result<Option<EnclaveKey>> {
        let resp = self
            .client
            .get_key(
                Some(SIGNING_KEY_PATH.to_owned()),
                Some(SIGNING_KEY_PURPOSE.to_owned()),
            )
            .await
            .map_err(|e| agent_error("GetKey", e))?;
        let key_hex = Zeroizing::new(resp.key);
        let digits = key_hex.trim();
        let digits = digits.strip_prefix("0x").unwrap_or(digits);
        // The error text is fixed: hex's own message would quote a character of the key.
        let secret = Zeroizing::new(
            hex::decode(digits)
                .map_err(|_| Error::Dstack("GetKey returned a key that is not hex".to_owned()))?,
        );
        EnclaveKey::from_secret_bytes(&secret)
            .map(Some)
            .map_err(Error::DerivedKey)
    }
}
