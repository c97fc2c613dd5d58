//! The metering ledger (SQLite): per authorization, the latest cumulative voucher signed by the
//! enclave key, and what the chain has settled of it.
//!
//! A charge is one SQLite transaction (WAL, `synchronous = FULL`): read the cumulative amount, add
//! the cost, sign the new voucher, write it, commit. The node awaits it before a response's
//! signature leaves, so an answer the client holds is always covered by a durable voucher.
//!
//! The fsync of every commit must not stall the async runtime, so the connection lives on one
//! dedicated writer thread (`cloister-ledger`) and every operation is a job sent to it; callers
//! await the answer. One thread also serialises charges: two answers on one authorization can never
//! read the same cumulative amount.
//!
//! The host's disk is not trusted: vouchers are signatures. After a restart with a new signing key,
//! [`Ledger::resign`] keeps only vouchers that recover to one of the node's own earlier registered
//! signers and signs their totals again with the new key; anything else is set aside, never paid.

mod store;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use alloy_primitives::{Address, B256, U256};
use cloister_crypto::EnclaveKey;
use cloister_types::eip712::{ApiKey, Domain};
use rusqlite::Connection;
use serde::Serialize;

/// A ledger failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// SQLite failed (disk full, corrupt file, ...).
    #[error("ledger database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The authorization's `maxAmount` is already used up.
    #[error("spend limit reached: {cumulative} + {amount} > max {max}")]
    OverMax {
        /// Already metered.
        cumulative: U256,
        /// This charge.
        amount: U256,
        /// The authorization's limit.
        max: U256,
    },
    /// A stored row does not decode (wrong lengths): the file was edited.
    #[error("ledger row is corrupt: {0}")]
    Corrupt(&'static str),
    /// The ledger directory could not be created.
    #[error("ledger directory: {0}")]
    Dir(#[source] std::io::Error),
    /// The writer thread could not be started.
    #[error("starting the ledger writer thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The writer thread is gone (it panicked): nothing more is metered.
    #[error("the ledger writer thread has stopped")]
    Closed,
}

/// The voucher a client receives with a metered response (`x-cloister-receipt`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// The authorization id (EIP-712 digest of the SpendAuthorization).
    pub authorization: String,
    /// Everything metered on this authorization so far, in token units (decimal).
    pub cumulative_amount: String,
    /// What this response cost (decimal).
    pub amount: String,
    /// EIP-712 `UsageVoucher` signature by the enclave key, `0x` r‖s‖v.
    pub signature: String,
}

/// One authorization's latest voucher, as the settler needs it.
#[derive(Clone, Debug)]
pub struct Voucher {
    /// The authorization id.
    pub authorization: B256,
    /// The client's API key (authorization + client signature).
    pub api_key: ApiKey,
    /// Cumulative metered amount.
    pub cumulative: U256,
    /// Who signed the voucher.
    pub signer: Address,
    /// The voucher signature.
    pub signature: [u8; 65],
    /// Cumulative amount known settled on chain.
    pub settled: U256,
}

/// What [`Ledger::resign`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResignReport {
    /// Vouchers re-signed with the current key.
    pub resigned: usize,
    /// Vouchers set aside: their signature does not recover to an accepted earlier signer.
    pub rejected: usize,
}

/// One operation, run on the writer thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The ledger: a handle to its writer thread. Every method but [`Ledger::open`] runs there; the
/// thread stops when the ledger is dropped.
pub struct Ledger {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path` and starts its writer thread. Blocks on the
    /// disk briefly: call it at start.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(LedgerError::Dir)?;
        }
        Self::start(Connection::open(path)?)
    }

    /// An in-memory ledger (tests, and nodes without settlement).
    pub fn in_memory() -> Result<Self, LedgerError> {
        Self::start(Connection::open_in_memory()?)
    }

    fn start(conn: Connection) -> Result<Self, LedgerError> {
        store::init(&conn)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("cloister-ledger".into())
            .spawn(move || {
                let mut conn = conn;
                for job in queue {
                    job(&mut conn);
                }
            })
            .map_err(LedgerError::Spawn)?;
        Ok(Self { jobs })
    }

    /// Runs `op` on the writer thread and awaits its result.
    async fn run<T, F>(&self, op: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, LedgerError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // The caller may have gone (client disconnected); the write stands either way.
            let _ = reply.send(op(conn));
        });
        self.jobs.send(job).map_err(|_| LedgerError::Closed)?;
        answer.await.map_err(|_| LedgerError::Closed)?
    }

    /// Metered so far on `authorization` (zero if never charged).
    pub async fn cumulative(&self, authorization: B256) -> Result<U256, LedgerError> {
        self.run(move |conn| store::cumulative(conn, authorization)).await
    }

    /// Charges `amount` to `key`'s authorization (id `authorization`), signs the new cumulative
    /// voucher with `signer` under `escrow`, and commits it durably before returning. A charge that
    /// would pass `maxAmount` is capped at it; one on an exhausted authorization is refused.
    pub async fn charge(
        &self,
        key: &ApiKey,
        authorization: B256,
        amount: U256,
        signer: &Arc<EnclaveKey>,
        escrow: &Domain,
    ) -> Result<Receipt, LedgerError> {
        let (key, signer, escrow) = (key.clone(), Arc::clone(signer), escrow.clone());
        self.run(move |conn| {
            store::charge(
                conn,
                &store::Charge {
                    key: &key,
                    authorization,
                    amount,
                    signer: &signer,
                    escrow: &escrow,
                },
            )
        })
        .await
    }

    /// Every voucher (not set aside) whose cumulative amount is above what the chain settled.
    pub async fn unsettled(&self) -> Result<Vec<Voucher>, LedgerError> {
        self.run(|conn| store::unsettled(conn)).await
    }

    /// Records that the chain has paid `authorization` up to `cumulative` (never moves backwards).
    pub async fn mark_settled(&self, authorization: B256, cumulative: U256) -> Result<(), LedgerError> {
        self.run(move |conn| store::mark_settled(conn, authorization, cumulative))
            .await
    }

    /// Records a settlement transaction.
    pub async fn record_settlement(
        &self,
        tx_hash: &str,
        items: usize,
        gas_used: u64,
    ) -> Result<(), LedgerError> {
        let tx_hash = tx_hash.to_owned();
        self.run(move |conn| store::record_settlement(conn, &tx_hash, items, gas_used))
            .await
    }

    /// Settlement transactions recorded, oldest first: `(tx hash, items)`.
    pub async fn settlements(&self) -> Result<Vec<(String, u64)>, LedgerError> {
        self.run(|conn| store::settlements(conn)).await
    }

    /// Where the log scan `name` resumes (the first block it has not read), if it ever saved one.
    pub async fn scan_position(&self, name: &str) -> Result<Option<u64>, LedgerError> {
        let name = name.to_owned();
        self.run(move |conn| store::scan_position(conn, &name)).await
    }

    /// Saves where the log scan `name` resumes after a restart (committed before returning).
    pub async fn set_scan_position(&self, name: &str, next_block: u64) -> Result<(), LedgerError> {
        let name = name.to_owned();
        self.run(move |conn| store::set_scan_position(conn, &name, next_block))
            .await
    }

    /// After a restart with `key`: every voucher signed by another key is checked (its signature
    /// must recover, under `escrow`, to the signer it names, and that signer must be in
    /// `accepted_signers`: the node's own earlier registered signers). Good ones are signed again
    /// with `key`; the rest are set aside.
    pub async fn resign(
        &self,
        key: &Arc<EnclaveKey>,
        escrow: &Domain,
        accepted_signers: &[Address],
    ) -> Result<ResignReport, LedgerError> {
        let (key, escrow, accepted) = (Arc::clone(key), escrow.clone(), accepted_signers.to_vec());
        self.run(move |conn| store::resign(conn, &key, &escrow, &accepted))
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::{Duration, Instant};

    use alloy_primitives::U256;
    use cloister_types::eip712::{
        SpendAuthorization, authorization_id, escrow_domain, recover_signer, voucher_digest,
    };
    use rusqlite::params;

    use super::*;

    fn key_for(client: &EnclaveKey, max: u64, domain: &Domain) -> (ApiKey, B256) {
        let auth = SpendAuthorization {
            client: client.address(),
            node: Address::repeat_byte(0x11),
            maxAmount: U256::from(max),
            expiry: 4_000_000_000,
            salt: B256::repeat_byte(7),
        };
        let id = authorization_id(domain, &auth);
        let key = ApiKey::new(auth, client.sign_prehash(&id.0));
        (key, id)
    }

    #[tokio::test]
    async fn charges_accumulate_durably_and_cap_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let domain = escrow_domain(31337, Address::repeat_byte(0xee));
        let node = Arc::new(EnclaveKey::generate());
        let (key, id) = key_for(&EnclaveKey::generate(), 100, &domain);
        {
            let ledger = Ledger::open(&path).unwrap();
            let r = ledger
                .charge(&key, id, U256::from(30), &node, &domain)
                .await
                .unwrap();
            assert_eq!(r.cumulative_amount, "30");
            let r = ledger
                .charge(&key, id, U256::from(50), &node, &domain)
                .await
                .unwrap();
            assert_eq!(r.cumulative_amount, "80");
            // The voucher signature recovers to the node's key over the escrow digest.
            let sig: [u8; 65] = hex::decode(r.signature.trim_start_matches("0x"))
                .unwrap()
                .try_into()
                .unwrap();
            let digest = voucher_digest(&domain, id, U256::from(80));
            assert_eq!(recover_signer(&digest, &sig).unwrap(), node.address());
        }
        // Reopened: nothing lost.
        let ledger = Ledger::open(&path).unwrap();
        assert_eq!(ledger.cumulative(id).await.unwrap(), U256::from(80));
        let r = ledger
            .charge(&key, id, U256::from(50), &node, &domain)
            .await
            .unwrap();
        assert_eq!((r.cumulative_amount.as_str(), r.amount.as_str()), ("100", "20"));
        assert!(matches!(
            ledger.charge(&key, id, U256::from(1), &node, &domain).await,
            Err(LedgerError::OverMax { .. })
        ));
        let unsettled = ledger.unsettled().await.unwrap();
        assert_eq!(unsettled.len(), 1);
        assert_eq!(unsettled[0].cumulative, U256::from(100));
        ledger.mark_settled(id, U256::from(100)).await.unwrap();
        assert!(ledger.unsettled().await.unwrap().is_empty());
        ledger.mark_settled(id, U256::from(10)).await.unwrap();
        assert!(
            ledger.unsettled().await.unwrap().is_empty(),
            "settled never moves backwards"
        );
        ledger.record_settlement("0xabc", 1, 21_000).await.unwrap();
        assert_eq!(ledger.settlements().await.unwrap(), vec![("0xabc".to_owned(), 1)]);
    }

    #[tokio::test]
    async fn resign_keeps_only_vouchers_of_registered_signers() {
        let domain = escrow_domain(31337, Address::repeat_byte(0xee));
        let ledger = Ledger::in_memory().unwrap();
        let old = Arc::new(EnclaveKey::generate());
        let intruder = Arc::new(EnclaveKey::generate());
        let (k1, id1) = key_for(&EnclaveKey::generate(), 1000, &domain);
        let (k2, id2) = key_for(&EnclaveKey::generate(), 1000, &domain);
        ledger
            .charge(&k1, id1, U256::from(5), &old, &domain)
            .await
            .unwrap();
        ledger
            .charge(&k2, id2, U256::from(9), &intruder, &domain)
            .await
            .unwrap();
        // The intruder's row claims the old (registered) signer but carries its own signature.
        let claimed = old.address();
        ledger
            .run(move |conn| {
                conn.execute(
                    "UPDATE vouchers SET signer = ?1 WHERE authorization = ?2",
                    params![claimed.as_slice(), id2.as_slice()],
                )?;
                Ok(())
            })
            .await
            .unwrap();

        let new = Arc::new(EnclaveKey::generate());
        let report = ledger.resign(&new, &domain, &[old.address()]).await.unwrap();
        assert_eq!(
            report,
            ResignReport {
                resigned: 1,
                rejected: 1
            }
        );
        let left = ledger.unsettled().await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].authorization, id1);
        assert_eq!(left[0].signer, new.address());
        let digest = voucher_digest(&domain, id1, U256::from(5));
        assert_eq!(
            recover_signer(&digest, &left[0].signature).unwrap(),
            new.address()
        );
    }

    #[tokio::test]
    async fn scan_positions_survive_a_reopen_per_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        {
            let ledger = Ledger::open(&path).unwrap();
            assert_eq!(ledger.scan_position("oracle").await.unwrap(), None);
            ledger.set_scan_position("oracle", 17).await.unwrap();
            ledger.set_scan_position("oracle", 42).await.unwrap();
            ledger.set_scan_position("other", 5).await.unwrap();
        }
        let ledger = Ledger::open(&path).unwrap();
        assert_eq!(ledger.scan_position("oracle").await.unwrap(), Some(42));
        assert_eq!(ledger.scan_position("other").await.unwrap(), Some(5));
        assert!(matches!(
            ledger.set_scan_position("oracle", u64::MAX).await,
            Err(LedgerError::Corrupt(_))
        ));
        assert_eq!(ledger.scan_position("oracle").await.unwrap(), Some(42));
    }

    /// On a single-threaded runtime a ledger job that holds the disk (here: sleeps on the writer
    /// thread) must not stop other tasks: a timer set after it fires before it ends.
    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_write_does_not_block_the_runtime() {
        let ledger = Ledger::in_memory().unwrap();
        let slow = ledger.run(|_| {
            std::thread::sleep(Duration::from_millis(400));
            Ok(Instant::now())
        });
        let tick = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Instant::now()
        };
        let (written, ticked) = tokio::join!(slow, tick);
        assert!(ticked < written.unwrap(), "the timer waited for the ledger");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_charges_on_one_authorization_are_exact() {
        let domain = escrow_domain(31337, Address::repeat_byte(0xee));
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(Ledger::open(&dir.path().join("l.sqlite")).unwrap());
        let node = Arc::new(EnclaveKey::generate());
        let (key, id) = key_for(&EnclaveKey::generate(), 1_000_000, &domain);
        let charges = (1..=50u64).map(|amount| {
            let (ledger, node, key, domain) = (
                Arc::clone(&ledger),
                Arc::clone(&node),
                key.clone(),
                domain.clone(),
            );
            tokio::spawn(async move {
                ledger
                    .charge(&key, id, U256::from(amount), &node, &domain)
                    .await
                    .unwrap()
            })
        });
        let mut totals: Vec<u64> = Vec::new();
        for c in charges {
            totals.push(c.await.unwrap().cumulative_amount.parse().unwrap());
        }
        totals.sort_unstable();
        totals.dedup();
        assert_eq!(totals.len(), 50, "every charge saw a distinct cumulative amount");
        assert_eq!(ledger.cumulative(id).await.unwrap(), U256::from(50 * 51 / 2));
    }
}
