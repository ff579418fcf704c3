//! A judged reading, whatever its source (station message or lab batch): what was measured,
//! where and when, and the judgement against the standards. Pure, no I/O; the store inserts
//! it, the incident tracks and the archive digest read it.
//!
//! One way to build one: [`JudgedReading::at_point`], from the sample's [`Origin`] and one
//! [`Measured`] value, judged by [`judge_at_point`] (the sample's pH, else the point's).
//! A station sample's readings come from [`judge_sample`]; the lab store fills the same two
//! structs from a lab row.

use chrono::{DateTime, Utc};

use crate::domain::judge::{judge_at_point, judging_ph, Judgement};
use crate::domain::metal::Metal;
use crate::domain::point::{LandUse, Point};
use crate::domain::sample::{ParsedReading, Sample};
use crate::domain::standard::Standards;

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

/// Where, when and how a sample was taken: what every metal of one sample shares.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// Source kind.
    pub source: Source,
    /// Station id, or lab batch id.
    pub source_id: &'a str,
    /// Station `msg_id`, or lab sample id.
    pub msg_id: &'a str,
    /// Sampling time.
    pub sampled_at: DateTime<Utc>,
    /// When soilmon received it.
    pub received_at: DateTime<Utc>,
    /// The sample's own pH, when measured (the point's is used otherwise).
    pub ph: Option<f64>,
    /// Analysis method.
    pub method: Option<&'a str>,
    /// Sampling depth (top, bottom), cm.
    pub depth_cm: Option<(f64, f64)>,
}

/// One measured value of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Measured<'a> {
    /// Analyte.
    pub metal: Metal,
    /// Value in mg/kg (the detection limit when not detected): the value judged.
    pub value_mgkg: f64,
    /// Value as sent.
    pub value_orig: f64,
    /// Unit as sent.
    pub unit_orig: &'a str,
    /// False when below the detection limit.
    pub detected: bool,
}

impl<'a> From<&'a ParsedReading> for Measured<'a> {
    fn from(r: &'a ParsedReading) -> Measured<'a> {
        Measured {
            metal: r.metal,
            value_mgkg: r.value_mgkg,
            value_orig: r.value_orig,
            unit_orig: &r.unit_orig,
            detected: r.detected,
        }
    }
}

impl JudgedReading {
    /// The reading of `measured`, taken at `point` as `origin` says, judged by the point's
    /// land use at the sample's pH, else the point's ([`judge_at_point`]).
    pub fn at_point(
        standards: &Standards,
        point: &Point,
        origin: &Origin<'_>,
        measured: &Measured<'_>,
    ) -> JudgedReading {
        JudgedReading {
            source: origin.source,
            source_id: origin.source_id.to_string(),
            msg_id: origin.msg_id.to_string(),
            point_id: point.id.clone(),
            county: point.county_code.clone(),
            land_use: point.land_use,
            sampled_at: origin.sampled_at,
            received_at: origin.received_at,
            metal: measured.metal,
            value_mgkg: measured.value_mgkg,
            value_orig: measured.value_orig,
            unit_orig: measured.unit_orig.to_string(),
            detected: measured.detected,
            ph: judging_ph(origin.ph, point),
            method: origin.method.map(str::to_string),
            depth_cm: origin.depth_cm,
            judgement: judge_at_point(
                standards,
                point,
                origin.ph,
                measured.metal,
                measured.value_mgkg,
                measured.detected,
            ),
        }
    }
}

/// Judges every reading of a validated station sample taken at `point`, in the sample's
/// order.
pub fn judge_sample(
    standards: &Standards,
    point: &Point,
    sample: &Sample,
    received_at: DateTime<Utc>,
) -> Vec<JudgedReading> {
    let origin = Origin {
        source: Source::Station,
        source_id: &sample.station_id,
        msg_id: &sample.msg_id,
        sampled_at: sample.sampled_at,
        received_at,
        ph: sample.ph,
        method: sample.method.as_deref(),
        depth_cm: sample.depth_cm,
    };
    sample
        .readings
        .iter()
        .map(|r| JudgedReading::at_point(standards, point, &origin, &Measured::from(r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::judge::Level;
    use crate::domain::point::PointType;
    use crate::domain::standard::{RotationRule, Standard};
    use chrono::TimeZone;

    fn standards() -> Standards {
        let load = |text, origin| Standard::from_toml(text, origin).unwrap();
        Standards::from_standards(
            vec![
                load(
                    include_str!("../../config/standards/gb15618-2018.toml"),
                    "gb15618",
                ),
                load(
                    include_str!("../../config/standards/gb36600-2018.toml"),
                    "gb36600",
                ),
            ],
            RotationRule::Stricter,
        )
        .unwrap()
    }

    fn paddy_point() -> Point {
        Point {
            id: "441781-B-0001".into(),
            name: "p".into(),
            county_code: "441781".into(),
            lon: 111.78,
            lat: 22.17,
            point_type: PointType::Basic,
            land_use: LandUse::Paddy,
            ph: Some(6.2),
        }
    }

    fn sample(ph: Option<f64>) -> Sample {
        Sample {
            station_id: "ST07".into(),
            msg_id: "st07-000123".into(),
            point_id: "441781-B-0001".into(),
            sampled_at: Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 0).unwrap(),
            ph,
            depth_cm: Some((0.0, 20.0)),
            method: Some("XRF".into()),
            readings: vec![
                // Paddy Cd screening: 0.4 mg/kg at 5.5 < pH <= 6.5, 0.6 at 6.5 < pH <= 7.5.
                ParsedReading {
                    metal: Metal::Cd,
                    value_orig: 500.0,
                    unit_orig: "ug/kg".into(),
                    value_mgkg: 0.5,
                    detected: true,
                },
                ParsedReading {
                    metal: Metal::Pb,
                    value_orig: 1.0,
                    unit_orig: "mg/kg".into(),
                    value_mgkg: 1.0,
                    detected: false,
                },
            ],
            content_sha256: "00".into(),
        }
    }

    #[test]
    fn a_station_sample_gives_one_reading_per_metal_with_every_field() {
        let received_at = Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 5).unwrap();
        let s = sample(None);
        let judged = judge_sample(&standards(), &paddy_point(), &s, received_at);
        assert_eq!(judged.len(), 2);
        let cd = &judged[0];
        assert_eq!(cd.source, Source::Station);
        assert_eq!(cd.source_id, "ST07");
        assert_eq!(cd.msg_id, "st07-000123");
        assert_eq!(cd.point_id, "441781-B-0001");
        assert_eq!(cd.county, "441781");
        assert_eq!(cd.land_use, LandUse::Paddy);
        assert_eq!(cd.sampled_at, s.sampled_at);
        assert_eq!(cd.received_at, received_at);
        assert_eq!(cd.metal, Metal::Cd);
        assert_eq!(cd.value_mgkg, 0.5);
        assert_eq!(cd.value_orig, 500.0);
        assert_eq!(cd.unit_orig, "ug/kg");
        assert!(cd.detected);
        assert_eq!(cd.method.as_deref(), Some("XRF"));
        assert_eq!(cd.depth_cm, Some((0.0, 20.0)));
        // No pH in the sample: the point's pH 6.2, where 0.5 mg/kg exceeds 0.4.
        assert_eq!(cd.ph, Some(6.2));
        assert_eq!(cd.judgement.level, Level::Screening);
        assert_eq!(judged[1].metal, Metal::Pb);
        assert!(!judged[1].detected);
        assert_eq!(judged[1].judgement.level, Level::None);
    }

    #[test]
    fn the_samples_ph_is_stored_and_judged_at() {
        let s = sample(Some(7.0));
        let judged = judge_sample(&standards(), &paddy_point(), &s, s.sampled_at);
        // At pH 7.0 the paddy Cd screening value is 0.6: 0.5 mg/kg does not exceed it.
        assert_eq!(judged[0].ph, Some(7.0));
        assert_eq!(judged[0].judgement.level, Level::None);
    }

    #[test]
    fn a_lab_reading_is_built_the_same_way() {
        let point = Point {
            ph: None,
            ..paddy_point()
        };
        let at = Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 0).unwrap();
        let origin = Origin {
            source: Source::Lab,
            source_id: "LAB-2026-001",
            msg_id: "S-0001",
            sampled_at: at,
            received_at: at,
            ph: None,
            method: None,
            depth_cm: None,
        };
        let measured = Measured {
            metal: Metal::Cd,
            value_mgkg: 0.35,
            value_orig: 0.35,
            unit_orig: "mg/kg",
            detected: true,
        };
        let j = JudgedReading::at_point(&standards(), &point, &origin, &measured);
        assert_eq!(j.source, Source::Lab);
        assert_eq!(
            (j.source_id.as_str(), j.msg_id.as_str()),
            ("LAB-2026-001", "S-0001")
        );
        assert_eq!(j.ph, None);
        assert_eq!(j.method, None);
        // No pH at all: the strictest band (0.3), assumed.
        assert_eq!(j.judgement.level, Level::Screening);
        assert!(j
            .judgement
            .thresholds
            .as_ref()
            .is_some_and(|t| t.ph_assumed));
    }
}
