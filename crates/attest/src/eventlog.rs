//! dstack event logs: replaying RTMR0..3 against a quote and reading the app identity from the
//! verified RTMR3 runtime events.
//!
//! A dstack guest agent returns, with each quote, a JSON list of the events extended into the
//! RTMRs: `{"imr", "event_type", "digest", "event", "event_payload"}` (digest and payload in hex).
//! RTMR0..2 events (firmware, kernel, command line) carry only digests that matter; RTMR3 events
//! are dstack runtime events (type `0x08000001`) whose payload is the thing measured.
//!
//! dstack's stripped ("lite") logs leave the `digest` of runtime events empty; those digests are
//! recomputed from name and payload (v1), so only the RTMR3 replay vouches for them.
//!
//! What is checked, each as an [`EventLogCheck`]:
//! 1. **replay**: for each RTMR `i`, `mr = 0^48; for e in events with imr == i: mr = SHA-384(mr ‖
//!    e.digest)`, and `mr` must equal the quote's RTMR `i`;
//! 2. **runtime event digests**: every RTMR3 runtime event's digest must be the dstack v1 digest
//!    `SHA-384(event_type as u32 LE ‖ ":" ‖ event ‖ ":" ‖ payload)`, so the payload is what was
//!    measured (otherwise the replay would accept any payload beside a correct digest);
//! 3. **app identity**: `app-id`, `compose-hash`, `instance-id`, `key-provider` and
//!    `os-image-hash` are taken only from events before `system-ready` (application code runs
//!    after it and may emit its own events) and only when 1 and 2 held; each may occur once;
//! 4. **MR_CONFIG_ID**: when not all zero it must be `0x01 ‖ compose_hash ‖ 0^15`.
//!
//! Pure: no I/O, no clock.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha384};
use thiserror::Error;

use crate::check::{Check, Checks, EventLogCheck};
use crate::quote::Quote;

/// Event type of dstack runtime events (RTMR3).
pub const DSTACK_RUNTIME_EVENT_TYPE: u32 = 0x0800_0001;

/// The runtime event after which application code runs; identity events come before it.
pub const SYSTEM_READY_EVENT: &str = "system-ready";

/// The largest event log accepted (real ones are tens of KiB).
pub const MAX_EVENTS: usize = 4096;

/// One event of a dstack event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Which RTMR the event was extended into (0..=3).
    pub imr: u8,
    /// TCG event type (`0x08000001` for dstack runtime events).
    pub event_type: u32,
    /// The SHA-384 digest extended into the RTMR.
    #[serde(serialize_with = "hex_ser")]
    pub digest: [u8; 48],
    /// Event name (dstack runtime events), often empty for firmware events.
    pub event: String,
    /// Event payload.
    #[serde(serialize_with = "hex_ser")]
    pub event_payload: Vec<u8>,
}

impl Event {
    /// The dstack v1 runtime event digest of this event's type, name and payload:
    /// `SHA-384(event_type LE ‖ ":" ‖ event ‖ ":" ‖ payload)`.
    pub fn runtime_digest_v1(&self) -> [u8; 48] {
        let mut h = Sha384::new();
        h.update(self.event_type.to_le_bytes());
        h.update(b":");
        h.update(self.event.as_bytes());
        h.update(b":");
        h.update(&self.event_payload);
        h.finalize().into()
    }
}

/// Why an event log could not be read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EventLogError {
    /// The log (or the string holding it) is not JSON.
    #[error("event log is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The log is not a JSON list.
    #[error("event log is not a JSON list")]
    NotAList,
    /// The log has more events than [`MAX_EVENTS`].
    #[error("event log has {0} events; the limit is {MAX_EVENTS}")]
    TooLarge(usize),
    /// An event lacks a field or has one of the wrong type or size.
    #[error("event {index}: {reason}")]
    BadEvent {
        /// Position in the log.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Parses an event log: a JSON list, or a JSON string holding one (the guest agent's
/// `event_log` field is a string, NEAR AI's `info.tcb_info.event_log` is a list).
pub fn parse_event_log(event_log: &Value) -> Result<Vec<Event>, EventLogError> {
    let owned;
    let list = match event_log {
        Value::String(text) => {
            owned = serde_json::from_str::<Value>(text)?;
            &owned
        }
        other => other,
    };
    let items = list.as_array().ok_or(EventLogError::NotAList)?;
    if items.len() > MAX_EVENTS {
        return Err(EventLogError::TooLarge(items.len()));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| parse_event(item).map_err(|reason| EventLogError::BadEvent { index, reason }))
        .collect()
}

/// Parses an event log given as JSON text.
pub fn parse_event_log_str(event_log: &str) -> Result<Vec<Event>, EventLogError> {
    parse_event_log(&serde_json::from_str(event_log)?)
}

fn parse_event(item: &Value) -> Result<Event, String> {
    let uint = |key: &str| {
        item.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("`{key}` missing or not an unsigned integer"))
    };
    let text = |key: &str| {
        item.get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("`{key}` missing or not a string"))
    };
    let imr = u8::try_from(uint("imr")?)
        .ok()
        .filter(|i| *i < 4)
        .ok_or("`imr` must be 0..=3")?;
    let event_type = u32::try_from(uint("event_type")?).map_err(|_| "`event_type` exceeds u32")?;
    // `event` and `event_payload` may be absent or empty for firmware events.
    let event = item
        .get("event")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let event_payload = match item.get("event_payload") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(p)) => hex::decode(p).map_err(|e| format!("`event_payload` is not hex: {e}"))?,
        Some(_) => return Err("`event_payload` is not a string".to_owned()),
    };
    let digest = hex::decode(text("digest")?.trim_start_matches("0x"))
        .map_err(|e| format!("`digest` is not hex: {e}"))?;
    let mut parsed = Event {
        imr,
        event_type,
        digest: [0; 48],
        event,
        event_payload,
    };
    if digest.is_empty() && imr == 3 && event_type == DSTACK_RUNTIME_EVENT_TYPE {
        // A "lite" log (dstack's stripped form) omits runtime event digests: they are
        // recomputed from name and payload, and the RTMR3 replay is what checks them.
        parsed.digest = parsed.runtime_digest_v1();
    } else {
        parsed.digest = digest
            .try_into()
            .map_err(|d: Vec<u8>| format!("`digest` is {} bytes, expected 48 (SHA-384)", d.len()))?;
    }
    Ok(parsed)
}

/// Replays the log: RTMR0..3 as they would be after extending every event's digest in order.
pub fn replay_rtmrs(events: &[Event]) -> [[u8; 48]; 4] {
    let mut mrs = [[0u8; 48]; 4];
    for e in events {
        let mr = &mut mrs[usize::from(e.imr)];
        let mut h = Sha384::new();
        h.update(*mr);
        h.update(e.digest);
        *mr = h.finalize().into();
    }
    mrs
}

/// The dstack app identity read from verified RTMR3 runtime events. Hex strings are lower case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DstackApp {
    /// `app-id` payload, hex (in KMS mode: the address of the app's DstackApp contract).
    pub app_id: String,
    /// `compose-hash` payload: SHA-256 of the app-compose.json, hex (32 bytes).
    pub compose_hash: String,
    /// `instance-id` payload, hex (empty when the app runs without instance ids).
    pub instance_id: Option<String>,
    /// `key-provider` payload as text, e.g. `{"name":"kms","id":"<kms root pubkey DER hex>"}`.
    pub key_provider: Option<String>,
    /// `os-image-hash` payload, hex (older dstack versions do not emit it).
    pub os_image_hash: Option<String>,
}

/// The result of [`verify_event_log`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct EventLogVerdict {
    /// Every check, in order.
    pub checks: Checks,
    /// The app identity, present only when the replay and every runtime event digest held.
    pub app: Option<DstackApp>,
}

impl EventLogVerdict {
    /// [`Checks::passed`]: no check failed (so the app identity was read: every other path fails
    /// a check).
    pub fn passed(&self) -> bool {
        self.checks.passed()
    }

    /// The first failing check, if any.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.first_failure()
    }

    /// The check with this id, if it ran.
    pub fn check(&self, id: EventLogCheck) -> Option<&Check> {
        self.checks.get(id)
    }
}

/// Verifies a dstack event log against a (parsed, separately verified) TDX quote: RTMR0..3
/// replay, RTMR3 runtime event digests, app identity and MR_CONFIG_ID. See the module docs.
///
/// `event_log` is a JSON list, or a JSON string holding one.
pub fn verify_event_log(event_log: &Value, quote: &Quote) -> EventLogVerdict {
    let mut v = EventLogVerdict::default();
    let events = match parse_event_log(event_log) {
        Ok(events) => {
            v.checks.push(Check::pass(
                EventLogCheck::Parses,
                format!("{} events", events.len()),
            ));
            events
        }
        Err(e) => {
            v.checks.push(Check::fail(EventLogCheck::Parses, e.to_string()));
            return v;
        }
    };
    let Some(td) = quote.td_report() else {
        v.checks.push(Check::fail(
            EventLogCheck::Rtmr0Replay,
            "the quote is an SGX quote: it has no RTMRs",
        ));
        return v;
    };

    let replayed = replay_rtmrs(&events);
    let mut replay_ok = true;
    for (i, id) in EventLogCheck::REPLAY.into_iter().enumerate() {
        let n = events.iter().filter(|e| usize::from(e.imr) == i).count();
        if replayed[i] == td.rtmr[i] {
            v.checks.push(Check::pass(
                id,
                format!("{n} events replay to the quote's RTMR{i}"),
            ));
        } else {
            replay_ok = false;
            v.checks.push(Check::fail(
                id,
                format!(
                    "{n} events replay to {}, the quote has {}",
                    hex::encode(replayed[i]),
                    hex::encode(td.rtmr[i])
                ),
            ));
        }
    }

    let runtime: Vec<(usize, &Event)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.imr == 3 && e.event_type == DSTACK_RUNTIME_EVENT_TYPE)
        .collect();
    let bad: Vec<String> = runtime
        .iter()
        .filter(|(_, e)| e.runtime_digest_v1() != e.digest)
        .map(|(i, e)| format!("#{i} {:?}", e.event))
        .collect();
    let digests_ok = bad.is_empty();
    if digests_ok {
        v.checks.push(Check::pass(
            EventLogCheck::RuntimeDigests,
            format!(
                "{} runtime events match SHA-384(type ‖ \":\" ‖ name ‖ \":\" ‖ payload)",
                runtime.len()
            ),
        ));
    } else {
        v.checks.push(Check::fail(
            EventLogCheck::RuntimeDigests,
            format!("digest does not match name and payload: {}", bad.join(", ")),
        ));
    }

    if !(replay_ok && digests_ok) {
        v.checks.push(Check::skip(
            EventLogCheck::AppIdentity,
            "RTMR3 events are not verified; their payloads are not trusted",
        ));
        v.checks
            .push(Check::skip(EventLogCheck::MrConfigId, "no trusted compose hash"));
        return v;
    }

    match app_identity(runtime.iter().map(|(_, e)| *e)) {
        Ok(app) => {
            v.checks.push(Check::pass(
                EventLogCheck::AppIdentity,
                format!("app-id {}, compose-hash {}", app.app_id, app.compose_hash),
            ));
            v.checks
                .push(mr_config_id_check(&td.mr_config_id, &app.compose_hash));
            v.app = Some(app);
        }
        Err(reason) => {
            v.checks.push(Check::fail(EventLogCheck::AppIdentity, reason));
            v.checks
                .push(Check::skip(EventLogCheck::MrConfigId, "no trusted compose hash"));
        }
    }
    v
}

/// Verifies an event log given as JSON text. See [`verify_event_log`].
pub fn verify_event_log_str(event_log: &str, quote: &Quote) -> EventLogVerdict {
    verify_event_log(&Value::String(event_log.to_owned()), quote)
}

/// Reads the identity events that precede `system-ready`; each may occur at most once.
fn app_identity<'a>(runtime: impl Iterator<Item = &'a Event>) -> Result<DstackApp, String> {
    const NAMES: [&str; 5] = [
        "app-id",
        "compose-hash",
        "instance-id",
        "key-provider",
        "os-image-hash",
    ];
    let mut found: [Option<&[u8]>; 5] = [None; 5];
    for e in runtime.take_while(|e| e.event != SYSTEM_READY_EVENT) {
        if let Some(slot) = NAMES.iter().position(|n| *n == e.event) {
            if found[slot].is_some() {
                return Err(format!("event {:?} occurs more than once", e.event));
            }
            found[slot] = Some(&e.event_payload);
        }
    }
    let [app_id, compose_hash, instance_id, key_provider, os_image_hash] = found;
    let app_id = app_id.ok_or("no app-id event before system-ready")?;
    let compose_hash = compose_hash.ok_or("no compose-hash event before system-ready")?;
    if compose_hash.len() != 32 {
        return Err(format!(
            "compose-hash is {} bytes, expected 32",
            compose_hash.len()
        ));
    }
    let key_provider = key_provider
        .map(|p| String::from_utf8(p.to_vec()).map_err(|_| "key-provider payload is not UTF-8"))
        .transpose()?;
    Ok(DstackApp {
        app_id: hex::encode(app_id),
        compose_hash: hex::encode(compose_hash),
        instance_id: instance_id.map(hex::encode),
        key_provider,
        os_image_hash: os_image_hash.map(hex::encode),
    })
}

fn mr_config_id_check(mr_config_id: &[u8; 48], compose_hash_hex: &str) -> Check {
    if mr_config_id.iter().all(|b| *b == 0) {
        return Check::skip(
            EventLogCheck::MrConfigId,
            "MR_CONFIG_ID is zero (not used by this dstack version)",
        );
    }
    let mut compose_hash = [0u8; 32];
    // The compose hash was checked to be 32 bytes of hex by `app_identity`.
    if hex::decode_to_slice(compose_hash_hex, &mut compose_hash).is_err() {
        return Check::fail(EventLogCheck::MrConfigId, "compose hash is not 32 bytes of hex");
    }
    let want = crate::measure::mr_config_id(&compose_hash);
    if *mr_config_id == want {
        Check::pass(
            EventLogCheck::MrConfigId,
            "MR_CONFIG_ID = 0x01 ‖ compose_hash ‖ zeros",
        )
    } else {
        Check::fail(
            EventLogCheck::MrConfigId,
            format!(
                "MR_CONFIG_ID is {}, expected {}",
                hex::encode(mr_config_id),
                hex::encode(want)
            ),
        )
    }
}

fn hex_ser<S: serde::Serializer, T: AsRef<[u8]>>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v.as_ref()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::check::Outcome;
    use serde_json::json;

    fn runtime_event(name: &str, payload: &[u8]) -> Value {
        let mut e = Event {
            imr: 3,
            event_type: DSTACK_RUNTIME_EVENT_TYPE,
            digest: [0; 48],
            event: name.to_owned(),
            event_payload: payload.to_vec(),
        };
        e.digest = e.runtime_digest_v1();
        json!({"imr": 3, "event_type": e.event_type, "digest": hex::encode(e.digest),
               "event": name, "event_payload": hex::encode(payload)})
    }

    #[test]
    fn parses_string_or_list() {
        let list = json!([runtime_event("app-id", &[1; 20])]);
        let a = parse_event_log(&list).unwrap();
        let b = parse_event_log(&Value::String(list.to_string())).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0].event, "app-id");
    }

    #[test]
    fn rejects_bad_events() {
        assert!(matches!(
            parse_event_log(&json!({})),
            Err(EventLogError::NotAList)
        ));
        let bad_imr = json!([{"imr": 4, "event_type": 1, "digest": hex::encode([0; 48])}]);
        assert!(matches!(
            parse_event_log(&bad_imr),
            Err(EventLogError::BadEvent { index: 0, .. })
        ));
        let short = json!([{"imr": 0, "event_type": 1, "digest": "00"}]);
        assert!(parse_event_log(&short).is_err());
    }

    #[test]
    fn lite_runtime_events_get_their_digest_recomputed() {
        let full = runtime_event("app-id", &[1; 20]);
        let mut lite = full.clone();
        lite["digest"] = Value::String(String::new());
        let a = parse_event_log(&json!([full])).unwrap();
        let b = parse_event_log(&json!([lite])).unwrap();
        assert_eq!(a, b);
        // Only runtime events may omit it.
        let firmware = json!([{"imr": 0, "event_type": 1, "digest": ""}]);
        assert!(parse_event_log(&firmware).is_err());
    }

    #[test]
    fn identity_only_before_system_ready_and_once() {
        let log = json!([
            runtime_event("app-id", &[1; 20]),
            runtime_event("compose-hash", &[2; 32]),
            runtime_event("system-ready", b""),
            runtime_event("compose-hash", &[3; 32]),
        ]);
        let events = parse_event_log(&log).unwrap();
        let app = app_identity(events.iter()).unwrap();
        assert_eq!(app.compose_hash, hex::encode([2; 32]));
        assert_eq!(app.instance_id, None);

        let dup = json!([
            runtime_event("app-id", &[1; 20]),
            runtime_event("compose-hash", &[2; 32]),
            runtime_event("compose-hash", &[3; 32]),
        ]);
        let events = parse_event_log(&dup).unwrap();
        assert!(
            app_identity(events.iter())
                .unwrap_err()
                .contains("more than once")
        );
    }

    #[test]
    fn mr_config_id_layout() {
        let hash = hex::encode([0xab; 32]);
        let mut id = [0u8; 48];
        assert_eq!(mr_config_id_check(&id, &hash).outcome, Outcome::Skip);
        id[0] = 1;
        id[1..33].copy_from_slice(&[0xab; 32]);
        assert_eq!(mr_config_id_check(&id, &hash).outcome, Outcome::Pass);
        id[40] = 1;
        assert_eq!(mr_config_id_check(&id, &hash).outcome, Outcome::Fail);
    }
}
