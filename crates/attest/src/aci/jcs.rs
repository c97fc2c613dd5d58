//! The JSON Canonicalization Scheme (RFC 8785) for ACI's documents: object members sorted by
//! name, no whitespace, strings escaped the way JCS prescribes. ACI documents hold integers only
//! (Appendix A), so a non-integer number is refused instead of guessed at: a verifier fails closed.

use serde_json::Value;

/// Why a value has no ACI canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no canonical form: {0}")]
pub struct JcsError(pub String);

/// The JCS bytes of `value`.
///
/// ```
/// let v = serde_json::json!({"b": [1, {"d": null, "c": "é\n"}], "a": true});
/// assert_eq!(
///     cloister_attest::aci::jcs::canonical(&v).unwrap(),
///     r#"{"a":true,"b":[1,{"c":"é\n","d":null}]}"#.as_bytes()
/// );
/// ```
pub fn canonical(value: &Value) -> Result<Vec<u8>, JcsError> {
    let mut out = Vec::with_capacity(256);
    write(value, &mut out)?;
    Ok(out)
}

fn write(value: &Value, out: &mut Vec<u8>) -> Result<(), JcsError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                return Err(JcsError(format!("{n} is not an integer")));
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // RFC 8785 sorts by UTF-16 code units; for the ASCII names ACI uses that is byte
            // order, and for any name it is the order of `encode_utf16`.
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (name, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(name, out);
                out.push(b':');
                write(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// A JSON string as JCS writes it: `"` and `\` escaped, the control characters as `\b \t \n \f
/// \r` or `\u00xx` (lowercase hex), everything else as its UTF-8 bytes.
fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\u{0c}' => out.extend_from_slice(b"\\f"),
            '\r' => out.extend_from_slice(b"\\r"),
            c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn escapes_sorts_and_refuses_floats() {
        let v = serde_json::json!({"\u{1f}": "\"\\\u{7}", "B": -3, "a": 18446744073709551615u64});
        assert_eq!(
            String::from_utf8(canonical(&v).unwrap()).unwrap(),
            "{\"\\u001f\":\"\\\"\\\\\\u0007\",\"B\":-3,\"a\":18446744073709551615}"
        );
        assert!(canonical(&serde_json::json!({"x": 1.5})).is_err());
        // Names order by UTF-16 code units (RFC 8785 §3.2.3): U+FB01 sorts after U+1F600's
        // surrogates' lead 0xD83D in UTF-16, though not in UTF-8.
        let v = serde_json::json!({"\u{fb01}": 1, "\u{1f600}": 2});
        assert_eq!(
            String::from_utf8(canonical(&v).unwrap()).unwrap(),
            "{\"\u{1f600}\":2,\"\u{fb01}\":1}"
        );
    }
}
