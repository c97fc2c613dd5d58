//! [`CheckId`]: what a check checked, one family enum per verifier, and the scopes under which a
//! report lists the checks of its quote, event log and NRAS answer.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines one family of checks: the enum, its human names, `ALL`, and `From<_> for CheckId`.
macro_rules! check_family {
    (
        $(#[$meta:meta])*
        $name:ident => CheckId::$family:ident {
            $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every check of this family, in the order verification lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stable human name, e.g. for tables and JSON.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl From<$name> for CheckId {
            fn from(check: $name) -> Self {
                CheckId::$family(check)
            }
        }
    };
}

check_family! {
    /// Checks of a TDX/SGX quote ([`crate::verify::verify_quote`]).
    QuoteCheck => CheckId::Quote {
        /// The input decodes and parses as a quote.
        QuoteParses => "quote parses",
        /// The quote is not a Cloister simulated quote (or simulation is allowed, with a warning).
        NotSimulated => "not simulated",
        /// A simulated quote's development signature matches its body.
        SimulatedDevSignature => "simulated dev signature",
        /// The TD / enclave is not in debug mode.
        DebugOff => "debug attribute off",
        /// Collateral was supplied.
        CollateralPresent => "collateral present",
        /// The quote's PCK certificate chains to the Intel SGX Root CA.
        PckChain => "PCK certificate chain",
        /// The root CA and PCK CA CRLs are current and revoke nothing in the chains.
        Crls => "CRLs",
        /// The TCB info is signed by Intel and valid at the verification time.
        TcbInfo => "TCB info signature and validity",
        /// The QE identity is signed by Intel, valid, and the quote's QE matches it.
        QeIdentity => "QE identity signature and validity",
        /// The PCK key signs the QE report, which binds the attestation key that signs the quote.
        QuoteSignature => "quote signature (QE report and attestation key)",
        /// dcap-qvl found the platform's TCB level; its status is in the detail.
        TcbLevel => "TCB level and status",
        /// Intel security advisories for the platform or QE (a warning when any apply).
        Advisories => "advisories",
        /// The resulting TCB status is one the policy accepts.
        TcbAccepted => "TCB status accepted",
    }
}

impl QuoteCheck {
    /// The checks dcap-qvl's single call decides, in the order [`crate::verify::verify_quote`]
    /// lists them (the debug attribute, which Cloister also reads itself, comes earlier).
    pub const DCAP: [QuoteCheck; 7] = [
        Self::PckChain,
        Self::Crls,
        Self::TcbInfo,
        Self::QeIdentity,
        Self::QuoteSignature,
        Self::TcbLevel,
        Self::Advisories,
    ];

    /// Label of the DCAP checks as a group ([`QuoteCheck::DCAP`]); no single check carries it.
    pub const DCAP_LABEL: &'static str = "DCAP signature, certificate chain, CRLs and QE identity";
}

check_family! {
    /// Checks of NVIDIA GPU evidence ([`crate::gpu`]).
    GpuCheck => CheckId::Gpu {
        /// `nvidia_payload` is JSON of the expected shape, within the size limit.
        PayloadParses => "GPU evidence parses",
        /// The payload's `nonce` field is the verifier's nonce.
        PayloadNonce => "GPU evidence nonce",
        /// The evidence list is non-empty and not too long.
        DevicesPresent => "GPU evidence present",
        /// A device's certificate and evidence decode (base64, PEM, SPDM).
        DeviceDecodes => "GPU evidence decodes",
        /// A device's certificate chain verifies up to NVIDIA's Device Identity CA.
        CertChain => "GPU certificate chain to NVIDIA Device Identity CA",
        /// A device's SPDM signature verifies with its leaf certificate.
        SpdmSignature => "GPU SPDM signature",
        /// A device's SPDM request nonce is the verifier's nonce.
        SpdmNonce => "GPU SPDM request nonce",
        /// Measurements (RIM) and revocation (OCSP) are not checked (always a warning).
        NotChecked => "GPU measurements (RIM) and revocation (OCSP) not verified by this build",
    }
}

check_family! {
    /// Checks of an NVIDIA Remote Attestation Service answer ([`crate::nras`]).
    NrasCheck => CheckId::Nras {
        /// The response is `[["JWT", token], {name: token}]` and the JWKS parses.
        ResponseParses => "NRAS response parses",
        /// The token is ES384-signed by the JWKS key its `kid` names.
        Signature => "NRAS token signature (ES384, NVIDIA JWKS)",
        /// `nbf` and `iat` are not after the verification time, `exp` is after it.
        Validity => "NRAS token validity time",
        /// The token's `eat_nonce` is our nonce.
        Nonce => "NRAS eat_nonce",
        /// The overall token says `x-nvidia-overall-att-result: true`.
        OverallResult => "NRAS overall attestation result",
        /// The overall token's `submods` digests are the GPU tokens it came with.
        Submods => "NRAS GPU tokens bound to the overall token",
        /// A GPU token says `measres: success`.
        Measurements => "NRAS GPU measurements (measres)",
    }
}

check_family! {
    /// Checks of a dstack event log against a quote ([`crate::eventlog`]).
    EventLogCheck => CheckId::EventLog {
        /// The log parsed.
        Parses => "event log parses",
        /// RTMR0 replays.
        Rtmr0Replay => "RTMR0 replay",
        /// RTMR1 replays.
        Rtmr1Replay => "RTMR1 replay",
        /// RTMR2 replays.
        Rtmr2Replay => "RTMR2 replay",
        /// RTMR3 replays.
        Rtmr3Replay => "RTMR3 replay",
        /// Every RTMR3 runtime event digest matches its name and payload.
        RuntimeDigests => "RTMR3 runtime event digests",
        /// The app identity events were found, each once, before `system-ready`.
        AppIdentity => "dstack app identity",
        /// MR_CONFIG_ID is `0x01 ‖ compose_hash ‖ zeros` (or unused).
        MrConfigId => "MR_CONFIG_ID binds compose hash",
    }
}

impl EventLogCheck {
    /// The replay check of RTMR `i`, by index.
    pub const REPLAY: [EventLogCheck; 4] = [
        Self::Rtmr0Replay,
        Self::Rtmr1Replay,
        Self::Rtmr2Replay,
        Self::Rtmr3Replay,
    ];
}

check_family! {
    /// Checks of a whole attestation report ([`crate::report::verify_report`]); the GPU checks of
    /// a report are [`GpuCheck`]s, its quote and event-log checks are [`Scoped`].
    ReportCheck => CheckId::Report {
        /// The report's `request_nonce` is the nonce the verifier sent.
        NonceEcho => "request_nonce echoes ours",
        /// `signing_algo` is one this verifier binds: `ecdsa` (Cloister, Phala, NEAR) or `ed25519`
        /// (NEAR AI's TLS-bound layout).
        SigningAlgo => "signing_algo is ecdsa or ed25519",
        /// The report's `tee` field is not `simulated` (or simulation is allowed, with a warning).
        TeeNotSimulated => "tee is not simulated",
        /// `ecdsa`: report_data[0..20] is the signing address and report_data[20..32] is zero.
        /// `ed25519`: report_data[0..32] is `SHA-256(public key ‖ tls_cert_fingerprint)`.
        BindsAddress => "report_data binds signing_address",
        /// The report's `tls_cert_fingerprint` is the SHA-256 of the public key of the TLS
        /// certificate the connection that fetched it presented (a skip when it was not fetched
        /// over TLS, or the report binds no TLS key).
        TlsFingerprint => "tls_cert_fingerprint is the connection's certificate",
        /// report_data[32..64] is the verifier's nonce.
        BindsNonce => "report_data binds nonce",
        /// The event log (present, or why none is needed).
        EventLog => "event log",
        /// `key_binding` recovers to the attested signing address and names `hpke_public_key`.
        KeyBinding => "key_binding signed by the attested signer",
        /// `key_binding.expires_at` is in the future.
        KeyBindingFresh => "key_binding not expired",
    }
}

check_family! {
    /// Checks of an ACI attestation report (`aci/1`, §9.1: [`crate::aci::verify_aci_report`]); its
    /// quote's checks are [`Scoped`].
    AciCheck => CheckId::Aci {
        /// `api_version` is `aci/1`.
        ApiVersion => "ACI: api_version is aci/1",
        /// `tee_type` is one this verifier implements (`tdx`).
        TeeType => "ACI: tee_type is tdx",
        /// The keyset parses and `workload_keyset_digest` is the SHA-256 of its JCS form.
        KeysetDigest => "ACI: keyset digest recomputes",
        /// `report_data` is the SHA-256 of the statement built from the digest and our nonce.
        StatementBinding => "ACI: report_data is the statement digest",
        /// The quote's report_data is that digest, zero-padded to 64 bytes.
        QuoteBindsReportData => "ACI: quote binds report_data",
        /// The statement names our fresh nonce (not the unchallenged `null` form).
        Fresh => "ACI: statement names our nonce",
        /// `now < not_after`, and `not_after` is not implausibly distant.
        NotExpired => "ACI: keyset not expired",
        /// The keyset lists an `ed25519` receipt signing key.
        ReceiptKey => "ACI: receipt signing key listed",
        /// Source provenance names public code (`repo_url` + `repo_commit`) or an image digest.
        Provenance => "ACI: source provenance present",
        /// The provenance and the listed keys' custody are backed by a measurement the policy
        /// allows (the keys are generated inside that measured workload).
        MeasuredCustody => "ACI: measurement allowed (provenance, key custody)",
        /// The channel used is bound: the TLS SPKI seen is listed, or an E2EE key is listed.
        Channel => "ACI: channel bound to the keyset",
    }
}

check_family! {
    /// Checks a client's policy adds to a report verdict (`cloister_client::report`).
    PolicyCheck => CheckId::Policy {
        /// The quote's measurement digest is in the client's allowlist.
        MeasurementAllowed => "measurement in the allowed list",
        /// The report carries GPU evidence to send to NRAS (a skip when it has none).
        NrasEvidence => "NRAS",
        /// NRAS answered (a failure when it could not be reached or answered an error).
        NrasServiceAnswered => "NRAS: service answered",
    }
}

/// A check of an inner verdict as the report that contains it lists it: its name is shown after
/// the scope's prefix (`quote: `, `event log: `, `NRAS: `).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Scoped {
    /// A check of the report's quote (`quote: …`).
    Quote(QuoteCheck),
    /// A check of the report's event log (`event log: …`).
    EventLog(EventLogCheck),
    /// A check of NRAS's answer about the report's GPU evidence (`NRAS: …`).
    Nras(NrasCheck),
}

impl fmt::Display for Scoped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Quote(c) => write!(f, "quote: {c}"),
            Self::EventLog(c) => write!(f, "event log: {c}"),
            Self::Nras(c) => write!(f, "NRAS: {c}"),
        }
    }
}

/// What a check checked: every check of the quote, GPU, NRAS, event-log and report verdicts.
///
/// Its `Display` is the check's stable human name; serde reads and writes that name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CheckId {
    /// A quote check.
    Quote(QuoteCheck),
    /// A GPU evidence check.
    Gpu(GpuCheck),
    /// An NRAS answer check.
    Nras(NrasCheck),
    /// An event-log check.
    EventLog(EventLogCheck),
    /// A report check.
    Report(ReportCheck),
    /// A client policy check.
    Policy(PolicyCheck),
    /// An ACI report check.
    Aci(AciCheck),
    /// A check of an inner verdict, as the report that contains it lists it.
    Scoped(Scoped),
}

impl CheckId {
    /// This check as a report lists it: quote, event-log and NRAS checks move under their scope;
    /// the rest are unchanged.
    pub const fn scoped(self) -> Self {
        match self {
            Self::Quote(c) => Self::Scoped(Scoped::Quote(c)),
            Self::EventLog(c) => Self::Scoped(Scoped::EventLog(c)),
            Self::Nras(c) => Self::Scoped(Scoped::Nras(c)),
            other => other,
        }
    }

    /// This check without its scope (the inverse of [`CheckId::scoped`]).
    pub const fn unscoped(self) -> Self {
        match self {
            Self::Scoped(Scoped::Quote(c)) => Self::Quote(c),
            Self::Scoped(Scoped::EventLog(c)) => Self::EventLog(c),
            Self::Scoped(Scoped::Nras(c)) => Self::Nras(c),
            other => other,
        }
    }

    /// Every check id, scoped ones included.
    pub fn all() -> impl Iterator<Item = CheckId> {
        let plain = QuoteCheck::ALL
            .iter()
            .map(|c| CheckId::from(*c))
            .chain(GpuCheck::ALL.iter().map(|c| CheckId::from(*c)))
            .chain(NrasCheck::ALL.iter().map(|c| CheckId::from(*c)))
            .chain(EventLogCheck::ALL.iter().map(|c| CheckId::from(*c)))
            .chain(ReportCheck::ALL.iter().map(|c| CheckId::from(*c)))
            .chain(PolicyCheck::ALL.iter().map(|c| CheckId::from(*c)))
            .chain(AciCheck::ALL.iter().map(|c| CheckId::from(*c)));
        let scoped = QuoteCheck::ALL
            .iter()
            .map(|c| CheckId::Scoped(Scoped::Quote(*c)))
            .chain(
                EventLogCheck::ALL
                    .iter()
                    .map(|c| CheckId::Scoped(Scoped::EventLog(*c))),
            )
            .chain(NrasCheck::ALL.iter().map(|c| CheckId::Scoped(Scoped::Nras(*c))));
        plain.chain(scoped)
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Quote(c) => c.fmt(f),
            Self::Gpu(c) => c.fmt(f),
            Self::Nras(c) => c.fmt(f),
            Self::EventLog(c) => c.fmt(f),
            Self::Report(c) => c.fmt(f),
            Self::Policy(c) => c.fmt(f),
            Self::Aci(c) => c.fmt(f),
            Self::Scoped(c) => c.fmt(f),
        }
    }
}

impl From<Scoped> for CheckId {
    fn from(check: Scoped) -> Self {
        Self::Scoped(check)
    }
}

/// A name that is no check's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no check is named {0:?}")]
pub struct UnknownCheck(pub String);

impl FromStr for CheckId {
    type Err = UnknownCheck;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::all()
            .find(|id| id.to_string() == name)
            .ok_or_else(|| UnknownCheck(name.to_owned()))
    }
}

impl Serialize for CheckId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CheckId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}
