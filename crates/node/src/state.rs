//! [`AppState`]: what every handler shares.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use cloister_attest::collect::Attester;
use cloister_attest::collect::gpu::GpuEvidence;
use cloister_crypto::EnclaveKey;
use cloister_crypto::e2ee::{E2eeKeyPair, ENC_LEN, ReplayGuard};
use cloister_engine::Engine;
use cloister_types::SignatureRecord;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::aci::{AciService, ReceiptMeta};
use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::sigcache::{SignatureCache, SignedText};

/// How long an accepted envelope is remembered: longer than the whole window in which its
/// timestamp is accepted (± `MAX_CLOCK_SKEW_SECS`), so a replay is caught for as long as it could
/// pass the time check.
const REPLAY_TTL: std::time::Duration =
    std::time::Duration::from_secs(2 * cloister_types::e2ee::MAX_CLOCK_SKEW_SECS + 60);
/// Most envelopes remembered; past it sealed requests get 503 rather than risk a replay.
const REPLAY_CAPACITY: usize = 200_000;

/// The node's shared state: engine, attester, signing key, limits, signatures and metrics.
///
/// Cheap to clone: one reference count (axum clones the state for every middleware layer of every
/// request). The HTTP layer knows the engine only as `Arc<dyn Engine>`.
#[derive(Clone)]
pub struct AppState(Arc<StateParts>);

impl std::ops::Deref for AppState {
    type Target = StateParts;

    fn deref(&self) -> &StateParts {
        &self.0
    }
}

/// What an [`AppState`] holds (its fields are the node's own).
#[derive(Clone)]
pub struct StateParts {
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) attester: Arc<dyn Attester>,
    /// GPU evidence for reports (`nvidia_payload`); `None`: reports carry none.
    pub(crate) gpu: Option<Arc<dyn GpuEvidence>>,
    pub(crate) key: Arc<EnclaveKey>,
    /// The E2EE (HPKE X25519) key; its public half is bound into the report by `key`.
    pub(crate) e2ee: Arc<E2eeKeyPair>,
    /// The ACI identity (receipt key, keyset) and receipt store.
    pub(crate) aci: Arc<AciService>,
    pub(crate) config: Arc<NodeConfig>,
    /// Paid access (API keys, metering); `None`: the node serves for free.
    pub(crate) billing: Option<Arc<crate::billing::Billing>>,
    pub(crate) shared: Arc<Shared>,
}

/// Mutable parts behind one `Arc`.
pub(crate) struct Shared {
    pub(crate) signatures: Mutex<SignatureCache>,
    /// Encapsulated keys of sealed requests already accepted.
    replay: Mutex<ReplayGuard>,
    pub(crate) metrics: Metrics,
    admission: Arc<Semaphore>,
    /// Unix seconds at start (the `created` of `/v1/models` entries).
    pub(crate) started_unix: u64,
    /// EIP-55 address of `key`, computed once.
    pub(crate) address_hex: String,
    /// Ids of the models the engine serves (fixed for an engine's life), read once.
    model_ids: Vec<String>,
}

impl AppState {
    /// State for a node serving `engine`, attesting with `attester` and signing with `key`.
    pub fn new(
        engine: Arc<dyn Engine>,
        attester: Arc<dyn Attester>,
        key: Arc<EnclaveKey>,
        config: NodeConfig,
    ) -> Self {
        let started_unix = crate::unix_now();
        let shared = Shared {
            signatures: Mutex::new(SignatureCache::new(
                config.signature_ttl,
                config.signature_cache_max,
            )),
            replay: Mutex::new(ReplayGuard::new(REPLAY_TTL, REPLAY_CAPACITY)),
            metrics: Metrics::default(),
            admission: Arc::new(Semaphore::new(
                config.max_concurrent_requests.min(Semaphore::MAX_PERMITS),
            )),
            started_unix,
            address_hex: key.address_hex(),
            model_ids: engine.models().into_iter().map(|m| m.id).collect(),
        };
        let e2ee = Arc::new(E2eeKeyPair::generate());
        let aci = Arc::new(AciService::new(
            e2ee.public_key_bytes(),
            config.signature_ttl,
            config.signature_cache_max,
        ));
        Self(Arc::new(StateParts {
            engine,
            attester,
            gpu: None,
            key,
            e2ee,
            aci,
            config: Arc::new(config),
            billing: None,
            shared: Arc::new(shared),
        }))
    }

    /// Turns on paid access: every chat request needs an API key and is metered into `billing`.
    #[must_use]
    pub fn with_billing(mut self, billing: Arc<crate::billing::Billing>) -> Self {
        Arc::make_mut(&mut self.0).billing = Some(billing);
        self
    }

    /// Puts GPU evidence from `gpu` into every attestation report, for the report's nonce.
    #[must_use]
    pub fn with_gpu(mut self, gpu: Arc<dyn GpuEvidence>) -> Self {
        Arc::make_mut(&mut self.0).gpu = Some(gpu);
        self
    }

    /// The billing state, when paid access is on.
    pub fn billing(&self) -> Option<&Arc<crate::billing::Billing>> {
        self.billing.as_ref()
    }

    /// The EIP-55 `0x` address of the signing key (the one the attestation report binds).
    pub fn signing_address(&self) -> &str {
        &self.shared.address_hex
    }

    /// The limits this node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// A metrics label for a requested model: the id if served here, else `other` (a client must
    /// not be able to create label values).
    pub(crate) fn model_label(&self, requested: &str) -> String {
        if self.shared.model_ids.iter().any(|id| id == requested) {
            requested.to_owned()
        } else {
            "other".to_owned()
        }
    }

    /// Signs `text` for exchange `id` now, stores it for `GET /v1/signature/{id}`, and issues the
    /// exchange's ACI receipt over the same hashes. For answers that carry their signature (a
    /// header, an inline stream event).
    pub(crate) fn sign_and_store(&self, id: &str, text: String, receipt: ReceiptMeta<'_>) -> SignatureRecord {
        let signed = self.store_signed_text(id, text, receipt);
        self.record_of(&signed)
    }

    /// Stores `text` for exchange `id` and issues its ACI receipt; the signature is made when
    /// `GET /v1/signature/{id}` first asks for it (the same bytes as [`Self::sign_and_store`]:
    /// see [`SignedText`]). For streams that do not carry their signature.
    pub(crate) fn store_for_signing(&self, id: &str, text: String, receipt: ReceiptMeta<'_>) {
        self.store_signed_text(id, text, receipt);
    }

    fn store_signed_text(&self, id: &str, text: String, receipt: ReceiptMeta<'_>) -> Arc<SignedText> {
        self.aci.issue(id, &text, receipt);
        let signed = Arc::new(SignedText::unsigned(text));
        self.signatures()
            .insert(id.to_owned(), Arc::clone(&signed), Instant::now());
        signed
    }

    /// The signature record under `id`, if still held; signed here (outside the cache's lock) if
    /// no one has asked for it before.
    pub(crate) fn signature(&self, id: &str) -> Option<SignatureRecord> {
        let signed = self.signatures().get(id, Instant::now())?;
        Some(self.record_of(&signed))
    }

    fn record_of(&self, signed: &SignedText) -> SignatureRecord {
        SignatureRecord {
            text: signed.text().to_owned(),
            signature: signed
                .signature(&self.key, || self.metrics().signature_made())
                .to_owned(),
            signing_address: self.shared.address_hex.clone(),
            signing_algo: "ecdsa".to_owned(),
        }
    }

    /// The X25519 public key clients seal requests to.
    pub fn e2ee_public_key(&self) -> [u8; 32] {
        self.e2ee.public_key_bytes()
    }

    /// The E2EE key pair the report binds, for the oracle to open inputs sealed to this node
    /// ([`crate::onchain::OnChainNode::start_with_e2ee`]).
    pub fn e2ee_key(&self) -> Arc<E2eeKeyPair> {
        Arc::clone(&self.e2ee)
    }

    /// Records a sealed request's encapsulated key; refuses one already seen.
    pub(crate) fn check_replay(&self, enc: &[u8; ENC_LEN]) -> Result<(), crate::error::E2eeRefusal> {
        use crate::error::E2eeRefusal;
        let mut guard = self.shared.replay.lock().unwrap_or_else(PoisonError::into_inner);
        guard.check_and_insert(enc).map_err(|e| match e {
            cloister_crypto::Error::ReplayCacheFull => E2eeRefusal::ReplayCacheFull,
            _ => E2eeRefusal::Replayed,
        })
    }

    /// Number of signatures held.
    pub(crate) fn signature_count(&self) -> usize {
        self.signatures().len()
    }

    fn signatures(&self) -> std::sync::MutexGuard<'_, SignatureCache> {
        // Never held across an await; poisoning would only mean a panic mid-insert, and the cache
        // stays structurally valid, so keep serving.
        self.shared
            .signatures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits one API request if fewer than `max_concurrent_requests` are in flight. The request
    /// counts until the returned guard drops.
    pub(crate) fn try_admit(&self) -> Option<InFlight> {
        let permit = Arc::clone(&self.shared.admission).try_acquire_owned().ok()?;
        self.shared.metrics.request_started();
        Some(InFlight {
            _permit: permit,
            shared: Arc::clone(&self.shared),
        })
    }
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("signing_address", &self.shared.address_hex)
            .field("tee", &self.attester.tee())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// One admitted request; releases its slot and the in-flight gauge on drop.
pub(crate) struct InFlight {
    _permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.metrics.request_finished();
    }
}
