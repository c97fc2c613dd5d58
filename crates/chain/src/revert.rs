//! Revert data → named errors, from the errors every bound contract declares (ours and the
//! OpenZeppelin ones they inherit), plus Solidity's `Error(string)` and `Panic(uint256)`.

use std::collections::HashMap;
use std::sync::OnceLock;

use alloy::dyn_abi::{DynSolValue, JsonAbiExt};
use alloy::json_abi::Error as AbiError;
use alloy::primitives::{Bytes, Selector};
use alloy::sol_types::{Panic, Revert, SolError};

use crate::bindings;
use crate::error::ChainError;

fn known_errors() -> &'static HashMap<Selector, AbiError> {
    static ERRORS: OnceLock<HashMap<Selector, AbiError>> = OnceLock::new();
    ERRORS.get_or_init(|| {
        let abis = [
            bindings::DevToken::abi::contract(),
            bindings::SimulatedQuoteVerifier::abi::contract(),
            bindings::NodeRegistry::abi::contract(),
            bindings::Escrow::abi::contract(),
            bindings::InferenceOracle::abi::contract(),
            bindings::ExampleConsumer::abi::contract(),
        ];
        let mut map = HashMap::new();
        for abi in abis {
            for error in abi.errors() {
                map.entry(error.selector()).or_insert_with(|| error.clone());
            }
        }
        map
    })
}

fn format_value(v: &DynSolValue) -> String {
    match v {
        DynSolValue::Address(a) => format!("{a:#x}"),
        DynSolValue::FixedBytes(w, n) => format!("0x{}", alloy::primitives::hex::encode(&w[..*n])),
        DynSolValue::Bytes(b) => format!("0x{}", alloy::primitives::hex::encode(b)),
        DynSolValue::Uint(u, _) => u.to_string(),
        DynSolValue::Int(i, _) => i.to_string(),
        DynSolValue::Bool(b) => b.to_string(),
        DynSolValue::String(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}

/// Decodes revert data into [`ChainError::Reverted`] (or [`ChainError::RevertedUnknown`]).
pub fn decode_revert(data: Bytes) -> ChainError {
    if data.len() >= 4 {
        let selector = Selector::from_slice(&data[..4]);
        if selector == Revert::SELECTOR {
            if let Ok(r) = Revert::abi_decode(&data) {
                return ChainError::Reverted {
                    name: "Error".into(),
                    args: format!("{:?}", r.reason),
                    data,
                };
            }
        } else if selector == Panic::SELECTOR {
            if let Ok(p) = Panic::abi_decode(&data) {
                return ChainError::Reverted {
                    name: "Panic".into(),
                    args: p.code.to_string(),
                    data,
                };
            }
        } else if let Some(error) = known_errors().get(&selector)
            && let Ok(values) = error.abi_decode_input(&data[4..])
        {
            let args = values.iter().map(format_value).collect::<Vec<_>>().join(", ");
            return ChainError::Reverted {
                name: error.name.clone(),
                args,
                data,
            };
        }
    }
    ChainError::RevertedUnknown { data }
}

/// Maps an alloy contract error: revert data is decoded by name; the rest stays typed.
pub(crate) fn from_contract(err: alloy::contract::Error) -> ChainError {
    if let Some(data) = err.as_revert_data() {
        return decode_revert(data);
    }
    match err {
        alloy::contract::Error::TransportError(e) => ChainError::Rpc(e),
        alloy::contract::Error::PendingTransactionError(e) => ChainError::Receipt(e),
        other => ChainError::Contract(other),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use alloy::primitives::B256;
    use alloy::sol_types::SolError;

    #[test]
    fn decodes_our_errors_by_name() {
        let data = bindings::Escrow::VoucherAlreadySettled {
            authorization: B256::repeat_byte(7),
        }
        .abi_encode();
        let err = decode_revert(data.into());
        assert_eq!(err.revert_name(), Some("VoucherAlreadySettled"));
        assert!(err.to_string().contains("0x0707"), "{err}");
        let data = bindings::NodeRegistry::UnapprovedMeasurement {
            measurement: B256::ZERO,
        }
        .abi_encode();
        assert_eq!(
            decode_revert(data.into()).revert_name(),
            Some("UnapprovedMeasurement")
        );
        let data = Revert::from("nope").abi_encode();
        assert_eq!(decode_revert(data.into()).revert_name(), Some("Error"));
        assert!(matches!(
            decode_revert(Bytes::from_static(&[1, 2])),
            ChainError::RevertedUnknown { .. }
        ));
    }
}
