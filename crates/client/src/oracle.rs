//! Oracle inputs sealed to one node (`docs/protocol.md` §9, "Sealed oracle inputs").
//!
//! An `InferenceOracle.requestFor` request names the node that may fulfil it; its input can then
//! be sealed to that node's attested HPKE key with the E2EE envelope of §8, under an AAD that binds
//! the chain, the oracle, the requester and the model. Only the designated node's enclave opens it.
//! The answer is not sealed: it is public on chain.
//!
//! ```no_run
//! # async fn demo(oracle: alloy_primitives::Address, me: alloy_primitives::Address)
//! # -> cloister_client::Result<()> {
//! use std::sync::Arc;
//! use cloister_client::{NodeClient, Policy};
//! use cloister_client::oracle::{OracleTarget, seal_oracle_input};
//!
//! let node = NodeClient::new("https://node.example", Arc::new(Policy::default()))?;
//! let verified = node.verified().await?;
//! let target = OracleTarget { chain_id: 8453, oracle, requester: me, model: "m" };
//! let input = seal_oracle_input(&verified, &target, b"What is 2+2?")?;
//! // then: cloister_chain's Oracle::request_for(operator, "m", input.into(), fee, callback, gas)
//! # let _ = input; Ok(()) }
//! ```

use alloy_primitives::Address;
use cloister_crypto::e2ee::seal_request;
use cloister_types::e2ee::{ORACLE_SEALED_MAGIC, oracle_input_aad};

use crate::{Error, Result, VerifiedNode, unix_now};

/// Where a sealed input will be used: the AAD's fields.
#[derive(Clone, Copy, Debug)]
pub struct OracleTarget<'a> {
    /// Chain id of the oracle's chain.
    pub chain_id: u64,
    /// The `InferenceOracle` contract.
    pub oracle: Address,
    /// The account that calls `requestFor` (the oracle's `msg.sender`: a consumer contract when
    /// the request goes through one).
    pub requester: Address,
    /// The model id of the request.
    pub model: &'a str,
}

/// Seals `prompt` (the request's UTF-8 text) to `node`'s attested HPKE key for `target`. Returns
/// the on-chain input: [`ORACLE_SEALED_MAGIC`] ‖ `enc` (32) ‖ ciphertext (prompt + 16).
///
/// Refuses a node whose report binds no E2EE key ([`Error::E2eeUnavailable`]), whose binding does
/// not name the model ([`Error::ModelNotBound`]) or has expired ([`Error::KeyBindingInvalid`]).
/// The caller designates the operator whose registered signer is `node.signer` (an input sealed to
/// one node and designated to another is never answered, and is refunded after the deadline).
pub fn seal_oracle_input(node: &VerifiedNode, target: &OracleTarget<'_>, prompt: &[u8]) -> Result<Vec<u8>> {
    let key = node.e2ee.as_ref().ok_or(Error::E2eeUnavailable)?;
    if !node.binds_model(target.model) {
        return Err(Error::ModelNotBound {
            model: target.model.to_owned(),
        });
    }
    if key.expires_at <= unix_now() {
        return Err(Error::KeyBindingInvalid {
            detail: "the key binding has expired; verify the node again".to_owned(),
        });
    }
    // A bound HPKE key implies an ecdsa signer (the binding is EIP-191 signed).
    let signer = node.signer.address().ok_or(Error::E2eeUnavailable)?;
    let aad = oracle_input_aad(target.chain_id, &target.oracle, &target.requester, target.model);
    // The response keys are not needed: the oracle's answer is public, not sealed.
    let (sealed, _response_keys) = seal_request(&key.public_key, &signer, prompt, &aad)?;
    let mut out = Vec::with_capacity(ORACLE_SEALED_MAGIC.len() + sealed.enc.len() + sealed.ciphertext.len());
    out.extend_from_slice(ORACLE_SEALED_MAGIC);
    out.extend_from_slice(&sealed.to_bytes());
    Ok(out)
}
