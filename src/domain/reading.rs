//! A judged reading, whatever its source (station message or lab batch): what was measured,
//! where and when, and the judgement against the standards. Pure data, no I/O; the store
//! inserts it, the incident tracks and the archive digest read it.

use chrono::{DateTime, Utc};

use crate::domain::judge::Judgement;
use crate::domain::metal::Metal;
use crate::domain::point::LandUse;

/// Where a reading came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A station message over MQTT.
    Station,
    /// A laboratory batch.
    Lab,
}

impl Source {
    /// The database and wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Station => "station",
            Source::Lab => "lab",
        }
    }
}

/// One judged reading, ready to store.
#[derive(Debug, Clone)]
pub struct JudgedReading {
    /// Source kind.
    pub source: Source,
    /// Station id, or lab batch id.
    pub source_id: String,
    /// Station `msg_id`, or lab sample id.
    pub msg_id: String,
    /// Monitoring point.
    pub point_id: String,
    /// County of the point (selects the alert topic).
    pub county: String,
    /// Land use of the point.
    pub land_use: LandUse,
    /// Sampling time.
    pub sampled_at: DateTime<Utc>,
    /// When soilmon received it.
    pub received_at: DateTime<Utc>,
    /// Analyte.
    pub metal: Metal,
    /// Value in mg/kg (the detection limit when not detected).
    pub value_mgkg: f64,
    /// Value as sent.
    pub value_orig: f64,
    /// Unit as sent.
    pub unit_orig: String,
    /// False when below the detection limit.
    pub detected: bool,
    /// pH used for the judgement (sample's, else the point's).
    pub ph: Option<f64>,
    /// Analysis method.
    pub method: Option<String>,
    /// Sampling depth (top, bottom), cm.
    pub depth_cm: Option<(f64, f64)>,
    /// The judgement.
    pub judgement: Judgement,
}
