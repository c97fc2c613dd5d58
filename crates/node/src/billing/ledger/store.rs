//! The ledger's SQL, run on its writer thread only: plain blocking functions over one
//! [`Connection`]. Each write is one transaction, committed (`synchronous = FULL`) before it
//! returns.

use alloy_primitives::{Address, B256, U256};
use cloister_crypto::EnclaveKey;
use cloister_types::eip712::{ApiKey, Domain, voucher_digest};
use rusqlite::{Connection, OptionalExtension as _, params};

use super::{LedgerError, Receipt, ResignReport, Voucher};

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
CREATE TABLE IF NOT EXISTS scan_positions (
    name       TEXT PRIMARY KEY,  -- which scan (e.g. the oracle's, per chain and contract)
    next_block INTEGER NOT NULL,  -- the first block the scan has not read
    updated_at INTEGER NOT NULL
);
";

/// A `vouchers` row as stored: authorization, api key, cumulative, signer, signature, settled.
type RawVoucher = (Vec<u8>, String, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

/// WAL + FULL: a committed charge survives a crash or power cut.
pub(super) fn init(conn: &Connection) -> Result<(), LedgerError> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(())
}

fn now() -> i64 {
    i64::try_from(crate::unix_now()).unwrap_or(i64::MAX)
}

fn u256(bytes: &[u8]) -> Result<U256, LedgerError> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| LedgerError::Corrupt("amount"))?;
    Ok(U256::from_be_bytes(arr))
}

fn read_cumulative(conn: &Connection, authorization: B256) -> Result<U256, LedgerError> {
    let row: Option<Vec<u8>> = conn
        .query_row(
            "SELECT cumulative FROM vouchers WHERE authorization = ?1",
            params![authorization.as_slice()],
            |r| r.get(0),
        )
        .optional()?;
    row.map_or(Ok(U256::ZERO), |b| u256(&b))
}

pub(super) fn cumulative(conn: &Connection, authorization: B256) -> Result<U256, LedgerError> {
    read_cumulative(conn, authorization)
}

/// What a charge needs besides the connection.
pub(super) struct Charge<'a> {
    pub(super) key: &'a ApiKey,
    pub(super) authorization: B256,
    pub(super) amount: U256,
    pub(super) signer: &'a EnclaveKey,
    pub(super) escrow: &'a Domain,
}

pub(super) fn charge(conn: &mut Connection, c: &Charge<'_>) -> Result<Receipt, LedgerError> {
    let tx = conn.transaction()?;
    let cumulative = read_cumulative(&tx, c.authorization)?;
    let max = c.key.auth.maxAmount;
    if cumulative >= max && c.amount > U256::ZERO {
        return Err(LedgerError::OverMax {
            cumulative,
            amount: c.amount,
            max,
        });
    }
    // The answer is already computed: a cost past the limit is charged up to the limit.
    let next = cumulative.saturating_add(c.amount).min(max);
    let amount = next - cumulative;
    let digest = voucher_digest(c.escrow, c.authorization, next);
    let signature = c.signer.sign_prehash(&digest.0);
    tx.execute(
        "INSERT INTO vouchers (authorization, api_key, cumulative, signer, signature, settled, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(authorization) DO UPDATE SET
            cumulative = excluded.cumulative, signer = excluded.signer,
            signature = excluded.signature, updated_at = excluded.updated_at",
        params![
            c.authorization.as_slice(),
            c.key.encode(),
            next.to_be_bytes::<32>().as_slice(),
            c.signer.address().as_slice(),
            signature.as_slice(),
            U256::ZERO.to_be_bytes::<32>().as_slice(),
            now(),
        ],
    )?;
    tx.commit()?;
    Ok(Receipt {
        authorization: format!("{:#x}", c.authorization),
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
        authorization: B256::try_from(auth.as_slice()).map_err(|_| LedgerError::Corrupt("authorization"))?,
        api_key: ApiKey::decode(&key).map_err(|_| LedgerError::Corrupt("api key"))?,
        cumulative: u256(&cumulative)?,
        signer: Address::try_from(signer.as_slice()).map_err(|_| LedgerError::Corrupt("signer"))?,
        signature: signature
            .try_into()
            .map_err(|_| LedgerError::Corrupt("signature"))?,
        settled: u256(&settled)?,
    })
}

pub(super) fn unsettled(conn: &Connection) -> Result<Vec<Voucher>, LedgerError> {
    let mut stmt = conn.prepare(
        "SELECT authorization, api_key, cumulative, signer, signature, settled
         FROM vouchers WHERE rejected = 0 AND cumulative > settled ORDER BY updated_at",
    )?;
    let rows = stmt.query_map([], row_to_voucher)?;
    rows.map(|r| decode(r?)).collect()
}

pub(super) fn mark_settled(
    conn: &mut Connection,
    authorization: B256,
    cumulative: U256,
) -> Result<(), LedgerError> {
    let tx = conn.transaction()?;
    let current: Option<Vec<u8>> = tx
        .query_row(
            "SELECT settled FROM vouchers WHERE authorization = ?1",
            params![authorization.as_slice()],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(current) = current
        && u256(&current)? < cumulative
    {
        tx.execute(
            "UPDATE vouchers SET settled = ?2 WHERE authorization = ?1",
            params![
                authorization.as_slice(),
                cumulative.to_be_bytes::<32>().as_slice()
            ],
        )?;
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn record_settlement(
    conn: &Connection,
    tx_hash: &str,
    items: usize,
    gas_used: u64,
) -> Result<(), LedgerError> {
    conn.execute(
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

pub(super) fn settlements(conn: &Connection) -> Result<Vec<(String, u64)>, LedgerError> {
    let mut stmt = conn.prepare("SELECT tx_hash, items FROM settlements ORDER BY id")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    rows.map(|r| {
        let (h, n) = r?;
        Ok((h, u64::try_from(n).unwrap_or(0)))
    })
    .collect()
}

pub(super) fn scan_position(conn: &Connection, name: &str) -> Result<Option<u64>, LedgerError> {
    let row: Option<i64> = conn
        .query_row(
            "SELECT next_block FROM scan_positions WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()?;
    row.map(|b| u64::try_from(b).map_err(|_| LedgerError::Corrupt("scan position")))
        .transpose()
}

pub(super) fn set_scan_position(conn: &Connection, name: &str, next_block: u64) -> Result<(), LedgerError> {
    // SQLite integers are signed: a block past i64::MAX cannot be stored (and never exists).
    let next_block = i64::try_from(next_block).map_err(|_| LedgerError::Corrupt("scan position"))?;
    conn.execute(
        "INSERT INTO scan_positions (name, next_block, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET
            next_block = excluded.next_block, updated_at = excluded.updated_at",
        params![name, next_block, now()],
    )?;
    Ok(())
}

pub(super) fn resign(
    conn: &mut Connection,
    key: &EnclaveKey,
    escrow: &Domain,
    accepted_signers: &[Address],
) -> Result<ResignReport, LedgerError> {
    let me = key.address();
    let tx = conn.transaction()?;
    let rows: Vec<Voucher> = {
        let mut stmt = tx.prepare(
            "SELECT authorization, api_key, cumulative, signer, signature, settled
             FROM vouchers WHERE rejected = 0 AND signer != ?1",
        )?;
        let rows = stmt.query_map(params![me.as_slice()], row_to_voucher)?;
        rows.map(|r| decode(r?)).collect::<Result<_, _>>()?
    };
    let mut report = ResignReport::default();
    for v in rows {
        let digest = voucher_digest(escrow, v.authorization, v.cumulative);
        let genuine = cloister_types::eip712::recover_signer(&digest, &v.signature)
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
