//! The metering ledger (SQLite): per authorization, the latest cumulative voucher signed by the
//! enclave key, and what the chain has settled of it.
//!
//! A charge is one SQLite transaction (WAL, `synchronous = FULL`): read the cumulative amount, add
//! the cost, sign the new voucher, write it, commit. The node calls it before a response's
//! signature leaves, so an answer the client holds is always covered by a durable voucher.
//!
//! The host's disk is not trusted: vouchers are signatures. After a restart with a new signing key,
//! [`Ledger::resign`] keeps only vouchers that recover to one of the node's own earlier registered
//! signers and signs their totals again with the new key; anything else is set aside, never paid.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use alloy_primitives::{Address, B256, U256};
use cloister_crypto::EnclaveKey;
use cloister_types::eip712::{ApiKey, Domain, recover_signer, voucher_digest};
use rusqlite::{Connection, OptionalExtension as _, params};
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

/// A `vouchers` row as stored: authorization, api key, cumulative, signer, signature, settled.
type RawVoucher = (Vec<u8>, String, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

/// The ledger.
#[derive(Debug)]
pub struct Ledger {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS vouchers (
    authorization BLOB PRIMARY KEY,  -- 32 bytes
    api_key       TEXT NOT NULL,     -- ck1_… (auth + client signature)
    cumulative    BLOB NOT NULL,     -- U256 big-endian
    signer        BLOB NOT NULL,     -- 20 bytes
    signature     BLOB NOT NULL,     -- 65 bytes
    settled       BLOB NOT NULL,     -- U256 big-endian, what the chain has paid
    rejected      INTEGER NOT NULL DEFAULT 0,
    updated_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS settlements (
    id         INTEGER PRIMARY KEY,
    tx_hash    TEXT NOT NULL,
    items      INTEGER NOT NULL,
    gas_used   INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
";

fn now() -> i64 {
    i64::try_from(crate::unix_now()).unwrap_or(i64::MAX)
}

fn u256(bytes: &[u8]) -> Result<U256, LedgerError> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| LedgerError::Corrupt("amount"))?;
    Ok(U256::from_be_bytes(arr))
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path`.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        }
        Self::init(Connection::open(path)?)
    }

    /// An in-memory ledger (tests, and nodes without settlement).
    pub fn in_memory() -> Result<Self, LedgerError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, LedgerError> {
        // WAL + FULL: a committed charge survives a crash or power cut.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Metered so far on `authorization` (zero if never charged).
    pub fn cumulative(&self, authorization: B256) -> Result<U256, LedgerError> {
        let conn = self.conn();
        let row: Option<Vec<u8>> = conn
            .query_row(
                "SELECT cumulative FROM vouchers WHERE authorization = ?1",
                params![authorization.as_slice()],
                |r| r.get(0),
            )
            .optional()?;
        row.map_or(Ok(U256::ZERO), |b| u256(&b))
    }

    /// Charges `amount` to `key`'s authorization (id `authorization`), signs the new cumulative
    /// voucher with `signer` under `escrow`, and commits it durably. A charge that would pass
    /// `maxAmount` is capped at it; one on an exhausted authorization is refused.
    pub fn charge(
        &self,
        key: &ApiKey,
        authorization: B256,
        amount: U256,
        signer: &EnclaveKey,
        escrow: &Domain,
    ) -> Result<Receipt, LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let previous: Option<Vec<u8>> = tx
            .query_row(
                "SELECT cumulative FROM vouchers WHERE authorization = ?1",
                params![authorization.as_slice()],
                |r| r.get(0),
            )
            .optional()?;
        let cumulative = previous.map_or(Ok(U256::ZERO), |b| u256(&b))?;
        let max = key.auth.maxAmount;
        if cumulative >= max && amount > U256::ZERO {
            return Err(LedgerError::OverMax {
                cumulative,
                amount,
                max,
            });
        }
        // The answer is already computed: a cost past the limit is charged up to the limit.
        let next = cumulative.saturating_add(amount).min(max);
        let amount = next - cumulative;
        let digest = voucher_digest(escrow, authorization, next);
        let signature = signer.sign_prehash(&digest.0);
        tx.execute(
            "INSERT INTO vouchers (authorization, api_key, cumulative, signer, signature, settled, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(authorization) DO UPDATE SET
                cumulative = excluded.cumulative, signer = excluded.signer,
                signature = excluded.signature, updated_at = excluded.updated_at",
            params![
                authorization.as_slice(),
                key.encode(),
                next.to_be_bytes::<32>().as_slice(),
                signer.address().as_slice(),
                signature.as_slice(),
                U256::ZERO.to_be_bytes::<32>().as_slice(),
                now(),
            ],
        )?;
        tx.commit()?;
        Ok(Receipt {
            authorization: format!("{authorization:#x}"),
            cumulative_amount: next.to_string(),
            amount: amount.to_string(),
            signature: format!("0x{}", hex::encode(signature)),
        })
    }

    fn row_to_voucher(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawVoucher> {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
        ))
    }

    fn decode(raw: RawVoucher) -> Result<Voucher, LedgerError> {
        let (auth, key, cumulative, signer, signature, settled) = raw;
        Ok(Voucher {
            authorization: B256::try_from(auth.as_slice())
                .map_err(|_| LedgerError::Corrupt("authorization"))?,
            api_key: ApiKey::decode(&key).map_err(|_| LedgerError::Corrupt("api key"))?,
            cumulative: u256(&cumulative)?,
            signer: Address::try_from(signer.as_slice()).map_err(|_| LedgerError::Corrupt("signer"))?,
            signature: signature
                .try_into()
                .map_err(|_| LedgerError::Corrupt("signature"))?,
            settled: u256(&settled)?,
        })
    }

    /// Every voucher (not set aside) whose cumulative amount is above what the chain settled.
    pub fn unsettled(&self) -> Result<Vec<Voucher>, LedgerError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT authorization, api_key, cumulative, signer, signature, settled
             FROM vouchers WHERE rejected = 0 AND cumulative > settled ORDER BY updated_at",
        )?;
        let rows = stmt.query_map([], Self::row_to_voucher)?;
        rows.map(|r| Self::decode(r?)).collect()
    }

    /// Records that the chain has paid `authorization` up to `cumulative` (never moves backwards).
    pub fn mark_settled(&self, authorization: B256, cumulative: U256) -> Result<(), LedgerError> {
        let conn = self.conn();
        let current: Option<Vec<u8>> = conn
            .query_row(
                "SELECT settled FROM vouchers WHERE authorization = ?1",
                params![authorization.as_slice()],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(current) = current
            && u256(&current)? < cumulative
        {
            conn.execute(
                "UPDATE vouchers SET settled = ?2 WHERE authorization = ?1",
                params![
                    authorization.as_slice(),
                    cumulative.to_be_bytes::<32>().as_slice()
                ],
            )?;
        }
        Ok(())
    }

    /// Records a settlement transaction.
    pub fn record_settlement(&self, tx_hash: &str, items: usize, gas_used: u64) -> Result<(), LedgerError> {
        self.conn().execute(
            "INSERT INTO settlements (tx_hash, items, gas_used, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![
                tx_hash,
                i64::try_from(items).unwrap_or(i64::MAX),
                i64::try_from(gas_used).unwrap_or(i64::MAX),
                now()
            ],
        )?;
        Ok(())
    }

    /// Settlement transactions recorded, oldest first: `(tx hash, items)`.
    pub fn settlements(&self) -> Result<Vec<(String, u64)>, LedgerError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT tx_hash, items FROM settlements ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        rows.map(|r| {
            let (h, n) = r?;
            Ok((h, u64::try_from(n).unwrap_or(0)))
        })
        .collect()
    }

    /// After a restart with `key`: every voucher signed by another key is checked (its signature
    /// must recover, under `escrow`, to the signer it names, and that signer must be in
    /// `accepted_signers`: the node's own earlier registered signers). Good ones are signed again
    /// with `key`; the rest are set aside.
    pub fn resign(
        &self,
        key: &EnclaveKey,
        escrow: &Domain,
        accepted_signers: &[Address],
    ) -> Result<ResignReport, LedgerError> {
        let me = Address::from(key.address());
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let rows: Vec<Voucher> = {
            let mut stmt = tx.prepare(
                "SELECT authorization, api_key, cumulative, signer, signature, settled
                 FROM vouchers WHERE rejected = 0 AND signer != ?1",
            )?;
            let rows = stmt.query_map(params![me.as_slice()], Self::row_to_voucher)?;
            rows.map(|r| Self::decode(r?)).collect::<Result<_, _>>()?
        };
        let mut report = ResignReport::default();
        for v in rows {
            let digest = voucher_digest(escrow, v.authorization, v.cumulative);
            let genuine = recover_signer(&digest, &v.signature)
                .is_ok_and(|r| r == v.signer && accepted_signers.contains(&r));
            if genuine {
                let signature = key.sign_prehash(&digest.0);
                tx.execute(
                    "UPDATE vouchers SET signer = ?2, signature = ?3 WHERE authorization = ?1",
                    params![v.authorization.as_slice(), me.as_slice(), signature.as_slice()],
                )?;
                report.resigned += 1;
            } else {
                tracing::warn!(
                    authorization = %v.authorization,
                    signer = %v.signer,
                    "voucher does not recover to one of this node's registered signers; set aside"
                );
                tx.execute(
                    "UPDATE vouchers SET rejected = 1 WHERE authorization = ?1",
                    params![v.authorization.as_slice()],
                )?;
                report.rejected += 1;
            }
        }
        tx.commit()?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use alloy_primitives::U256;
    use cloister_types::eip712::{SpendAuthorization, authorization_id, escrow_domain};

    use super::*;

    fn key_for(client: &EnclaveKey, max: u64, domain: &Domain) -> (ApiKey, B256) {
        let auth = SpendAuthorization {
            client: Address::from(client.address()),
            node: Address::repeat_byte(0x11),
            maxAmount: U256::from(max),
            expiry: 4_000_000_000,
            salt: B256::repeat_byte(7),
        };
        let id = authorization_id(domain, &auth);
        let key = ApiKey::new(auth, client.sign_prehash(&id.0));
        (key, id)
    }

    #[test]
    fn charges_accumulate_durably_and_cap_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let domain = escrow_domain(31337, Address::repeat_byte(0xee));
        let node = EnclaveKey::generate();
        let (key, id) = key_for(&EnclaveKey::generate(), 100, &domain);
        {
            let ledger = Ledger::open(&path).unwrap();
            let r = ledger.charge(&key, id, U256::from(30), &node, &domain).unwrap();
            assert_eq!(r.cumulative_amount, "30");
            let r = ledger.charge(&key, id, U256::from(50), &node, &domain).unwrap();
            assert_eq!(r.cumulative_amount, "80");
            // The voucher signature recovers to the node's key over the escrow digest.
            let sig: [u8; 65] = hex::decode(r.signature.trim_start_matches("0x"))
                .unwrap()
                .try_into()
                .unwrap();
            let digest = voucher_digest(&domain, id, U256::from(80));
            assert_eq!(
                recover_signer(&digest, &sig).unwrap(),
                Address::from(node.address())
            );
        }
        // Reopened: nothing lost.
        let ledger = Ledger::open(&path).unwrap();
        assert_eq!(ledger.cumulative(id).unwrap(), U256::from(80));
        let r = ledger.charge(&key, id, U256::from(50), &node, &domain).unwrap();
        assert_eq!((r.cumulative_amount.as_str(), r.amount.as_str()), ("100", "20"));
        assert!(matches!(
            ledger.charge(&key, id, U256::from(1), &node, &domain),
            Err(LedgerError::OverMax { .. })
        ));
        let unsettled = ledger.unsettled().unwrap();
        assert_eq!(unsettled.len(), 1);
        assert_eq!(unsettled[0].cumulative, U256::from(100));
        ledger.mark_settled(id, U256::from(100)).unwrap();
        assert!(ledger.unsettled().unwrap().is_empty());
        ledger.mark_settled(id, U256::from(10)).unwrap();
        assert!(
            ledger.unsettled().unwrap().is_empty(),
            "settled never moves backwards"
        );
    }

    #[test]
    fn resign_keeps_only_vouchers_of_registered_signers() {
        let domain = escrow_domain(31337, Address::repeat_byte(0xee));
        let ledger = Ledger::in_memory().unwrap();
        let old = EnclaveKey::generate();
        let intruder = EnclaveKey::generate();
        let (k1, id1) = key_for(&EnclaveKey::generate(), 1000, &domain);
        let (k2, id2) = key_for(&EnclaveKey::generate(), 1000, &domain);
        ledger.charge(&k1, id1, U256::from(5), &old, &domain).unwrap();
        ledger
            .charge(&k2, id2, U256::from(9), &intruder, &domain)
            .unwrap();
        // The intruder's row claims the old (registered) signer but carries its own signature.
        ledger
            .conn()
            .execute(
                "UPDATE vouchers SET signer = ?1 WHERE authorization = ?2",
                params![Address::from(old.address()).as_slice(), id2.as_slice()],
            )
            .unwrap();

        let new = EnclaveKey::generate();
        let report = ledger
            .resign(&new, &domain, &[Address::from(old.address())])
            .unwrap();
        assert_eq!(
            report,
            ResignReport {
                resigned: 1,
                rejected: 1
            }
        );
        let left = ledger.unsettled().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].authorization, id1);
        assert_eq!(left[0].signer, Address::from(new.address()));
        let digest = voucher_digest(&domain, id1, U256::from(5));
        assert_eq!(
            recover_signer(&digest, &left[0].signature).unwrap(),
            Address::from(new.address())
        );
    }
}
