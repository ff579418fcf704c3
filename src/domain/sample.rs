//! A station sample as the payload parser leaves it: the validated [`Sample`] with its
//! [`ParsedReading`]s, or a [`Rejection`] with its [`RejectCode`]. Types only, no parsing
//! (that is `ingest::payload`) and no I/O.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::domain::metal::Metal;

/// Why a message was refused. The spelling of each code is part of the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCode {
    /// Not UTF-8, not JSON, or nested too deeply.
    MalformedJson,
    /// Larger than `ingest.max_payload_bytes`.
    TooLarge,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type or shape.
    BadType,
    /// `point_id` is not in the registry.
    UnknownPoint,
    /// A metal name soilmon does not know.
    UnknownMetal,
    /// A unit soilmon does not know.
    UnknownUnit,
    /// A negative concentration.
    NegativeValue,
    /// NaN or infinity (as a JSON token, a string, or an out-of-range number).
    NonFiniteValue,
    /// Above the configured physical ceiling for the metal.
    ImplausibleValue,
    /// `sampled_at` is not RFC 3339 with an offset, or earlier than `ingest.earliest_sample`.
    BadTimestamp,
    /// `sampled_at` lies further in the future than `ingest.future_skew_secs`.
    FutureTimestamp,
    /// `ph` outside 0–14.
    PhOutOfRange,
    /// The payload's `station_id` differs from the topic's.
    StationMismatch,
    /// The same `msg_id` was already stored with different content.
    ConflictingDuplicate,
    /// The same metal appears twice in one message.
    DuplicateMetal,
    /// The topic is not `…/stations/{station_id}/readings`.
    BadTopic,
}

impl RejectCode {
    /// Every code, for documentation and metrics.
    pub const ALL: [RejectCode; 17] = [
        RejectCode::MalformedJson,
        RejectCode::TooLarge,
        RejectCode::MissingField,
        RejectCode::BadType,
        RejectCode::UnknownPoint,
        RejectCode::UnknownMetal,
        RejectCode::UnknownUnit,
        RejectCode::NegativeValue,
        RejectCode::NonFiniteValue,
        RejectCode::ImplausibleValue,
        RejectCode::BadTimestamp,
        RejectCode::FutureTimestamp,
        RejectCode::PhOutOfRange,
        RejectCode::StationMismatch,
        RejectCode::ConflictingDuplicate,
        RejectCode::DuplicateMetal,
        RejectCode::BadTopic,
    ];

    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::MalformedJson => "malformed_json",
            RejectCode::TooLarge => "too_large",
            RejectCode::MissingField => "missing_field",
            RejectCode::BadType => "bad_type",
            RejectCode::UnknownPoint => "unknown_point",
            RejectCode::UnknownMetal => "unknown_metal",
            RejectCode::UnknownUnit => "unknown_unit",
            RejectCode::NegativeValue => "negative_value",
            RejectCode::NonFiniteValue => "non_finite_value",
            RejectCode::ImplausibleValue => "implausible_value",
            RejectCode::BadTimestamp => "bad_timestamp",
            RejectCode::FutureTimestamp => "future_timestamp",
            RejectCode::PhOutOfRange => "ph_out_of_range",
            RejectCode::StationMismatch => "station_mismatch",
            RejectCode::ConflictingDuplicate => "conflicting_duplicate",
            RejectCode::DuplicateMetal => "duplicate_metal",
            RejectCode::BadTopic => "bad_topic",
        }
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused message: the code, a human-readable detail, and the `msg_id` if it was readable.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Reason code.
    pub code: RejectCode,
    /// What exactly was wrong, for the station's operator.
    pub detail: String,
    /// The message id, when the payload was readable far enough.
    pub msg_id: Option<String>,
}

/// One metal of a sample, normalised to mg/kg.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedReading {
    /// Analyte.
    pub metal: Metal,
    /// Value as sent.
    pub value_orig: f64,
    /// Unit as sent.
    pub unit_orig: String,
    /// Value in mg/kg (the detection limit when `detected` is false).
    pub value_mgkg: f64,
    /// False when below the method detection limit.
    pub detected: bool,
}

/// A validated station message.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Station id (from the topic).
    pub station_id: String,
    /// Message id, unique per station.
    pub msg_id: String,
    /// Registered point id.
    pub point_id: String,
    /// When the soil was sampled.
    pub sampled_at: DateTime<Utc>,
    /// pH of this sample, if measured.
    pub ph: Option<f64>,
    /// Sampling depth (top, bottom), cm.
    pub depth_cm: Option<(f64, f64)>,
    /// Analysis method as sent (e.g. `XRF`).
    pub method: Option<String>,
    /// The readings.
    pub readings: Vec<ParsedReading>,
    /// SHA-256 (hex) of the canonical payload (keys sorted): equal content ⇔ equal hash.
    pub content_sha256: String,
}
