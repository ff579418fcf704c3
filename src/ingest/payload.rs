//! Station payloads: raw MQTT bytes → a validated [`Sample`], or a [`Rejection`] with a
//! reason code. Pure: no I/O, never panics on input.
//!
//! A message is accepted or refused whole: if any reading in it is bad, nothing of it is
//! stored (it is quarantined), so a station can correct and resend it under the same
//! `msg_id`. Unknown extra fields are allowed: they are part of the content hash, and the
//! raw bytes are archived verbatim by the writer.
//!
//! The payload is parsed once, into a borrowed tree ([`json`]), which both the validation and
//! the content hash read. A refusal whose `msg_id` the strict parse could not read carries
//! the id a lenient scan of the bytes recovers ([`scan`]), when it recovers one.

mod json;
pub mod scan;

use std::fmt::Display;

use chrono::{DateTime, Utc};

use crate::config::IngestConfig;
use crate::domain::metal::Metal;
use crate::domain::rules::{self, RuleError, TimeWindow};
use crate::domain::unit::Unit;
use crate::registry::Registry;

use json::{Json, Object};

use crate::domain::sample::{ParsedReading, RejectCode, Rejection, Sample};

/// Most readings one message may carry.
pub const MAX_READINGS: usize = 32;

/// Parses and validates one message published by `station_id`. A refusal carries the
/// `msg_id` as parsed, or else as [`scan::msg_id`] recovers it from the bytes.
pub fn parse(
    station_id: &str,
    bytes: &[u8],
    now: DateTime<Utc>,
    cfg: &IngestConfig,
    registry: &Registry,
) -> Result<Sample, Rejection> {
    strict(station_id, bytes, now, cfg, registry).map_err(|mut r| {
        if r.msg_id.is_none() {
            r.msg_id = scan::msg_id(bytes);
        }
        r
    })
}

/// [`parse`] without the lenient id scan.
fn strict(
    station_id: &str,
    bytes: &[u8],
    now: DateTime<Utc>,
    cfg: &IngestConfig,
    registry: &Registry,
) -> Result<Sample, Rejection> {
    if bytes.len() > cfg.max_payload_bytes {
        return Err(unidentified(
            RejectCode::TooLarge,
            format!("{} bytes, limit {}", bytes.len(), cfg.max_payload_bytes),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        unidentified(
            RejectCode::MalformedJson,
            format!("payload is not UTF-8: {e}"),
        )
    })?;
    let value = Json::parse(text).map_err(|e| json_error(text, &e))?;
    let Json::Object(obj) = &value else {
        return Err(unidentified(
            RejectCode::BadType,
            "payload must be a JSON object".into(),
        ));
    };
    let msg_id = msg_id(obj)?;
    let fields = Fields {
        obj,
        msg_id: &msg_id,
    };
    let sample = fields.validate(station_id, now, cfg, registry)?;
    let content_sha256 = value
        .content_sha256()
        .map_err(|e| fields.reject(RejectCode::MalformedJson, format!("cannot hash: {e}")))?;
    Ok(Sample {
        content_sha256,
        ..sample
    })
}

/// A refusal of a message whose `msg_id` could not be read.
fn unidentified(code: RejectCode, detail: String) -> Rejection {
    Rejection {
        code,
        detail,
        msg_id: None,
    }
}

/// The message id: required, a string that passes [`rules::check_id`].
fn msg_id(obj: &Object<'_>) -> Result<String, Rejection> {
    match obj.get("msg_id") {
        None | Some(Json::Null) => Err(unidentified(
            RejectCode::MissingField,
            "msg_id is required".into(),
        )),
        Some(Json::String(s)) if rules::check_id(s).is_ok() => Ok(s.to_string()),
        Some(_) => Err(unidentified(
            RejectCode::BadType,
            "msg_id must be a string of 1-128 printable characters".into(),
        )),
    }
}

/// Maps a JSON parse error to a reason: NaN/Infinity tokens and numbers out of f64 range are
/// `non_finite_value`, everything else `malformed_json`.
fn json_error(text: &str, e: &serde_json::Error) -> Rejection {
    let rest = offset_of(text, e.line(), e.column()).map_or("", |o| &text[o..]);
    let rest = rest.trim_start_matches('-');
    let non_finite = rest.starts_with("NaN")
        || rest.starts_with("Infinity")
        || e.to_string().contains("number out of range");
    Rejection {
        code: if non_finite {
            RejectCode::NonFiniteValue
        } else {
            RejectCode::MalformedJson
        },
        detail: format!("invalid JSON: {e}"),
        msg_id: None,
    }
}

/// Byte offset of a 1-based line/column position as reported by serde_json (the column
/// points at the offending character, counted from 1). Columns count bytes.
fn offset_of(text: &str, line: usize, column: usize) -> Option<usize> {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let offset = line_start + column.saturating_sub(1);
    text.is_char_boundary(offset).then_some(offset)
}

/// Field-by-field validation of a payload object.
struct Fields<'a> {
    obj: &'a Object<'a>,
    msg_id: &'a str,
}

impl Fields<'_> {
    fn reject(&self, code: RejectCode, detail: String) -> Rejection {
        Rejection {
            code,
            detail,
            msg_id: Some(self.msg_id.to_string()),
        }
    }

    fn required(&self, key: &str) -> Result<&Json<'_>, Rejection> {
        match self.obj.get(key) {
            None | Some(Json::Null) => {
                Err(self.reject(RejectCode::MissingField, format!("{key} is required")))
            }
            Some(v) => Ok(v),
        }
    }

    fn string(&self, key: &(impl Display + ?Sized), v: &Json<'_>) -> Result<String, Rejection> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.reject(RejectCode::BadType, format!("{key} must be a string")))
    }

    /// A number, or a string spelling NaN/Infinity (reported as non-finite).
    fn number(&self, key: &(impl Display + ?Sized), v: &Json<'_>) -> Result<f64, Rejection> {
        match v {
            Json::Number(n) => n.as_f64().filter(|f| f.is_finite()).ok_or_else(|| {
                self.reject(RejectCode::NonFiniteValue, format!("{key} is not finite"))
            }),
            Json::String(s) if is_non_finite_word(s) => Err(self.reject(
                RejectCode::NonFiniteValue,
                format!("{key} is {s:?}, not a finite number"),
            )),
            _ => Err(self.reject(RejectCode::BadType, format!("{key} must be a number"))),
        }
    }

    fn validate(
        &self,
        station_id: &str,
        now: DateTime<Utc>,
        cfg: &IngestConfig,
        registry: &Registry,
    ) -> Result<Sample, Rejection> {
        if let Some(v) = self.obj.get("station_id").filter(|v| !v.is_null()) {
            let claimed = self.string("station_id", v)?;
            if claimed != station_id {
                return Err(self.reject(
                    RejectCode::StationMismatch,
                    format!("payload station_id {claimed:?} but topic station {station_id:?}"),
                ));
            }
        }
        let point_id = self.string("point_id", self.required("point_id")?)?;
        if registry.get(&point_id).is_none() {
            return Err(self.reject(
                RejectCode::UnknownPoint,
                format!("point {point_id:?} is not registered"),
            ));
        }
        let sampled_at = self.sampled_at(now, cfg)?;
        let ph = self.ph()?;
        let depth_cm = self.depth()?;
        let method = match self.obj.get("method").filter(|v| !v.is_null()) {
            None => None,
            Some(v) => Some(self.string("method", v)?),
        };
        let readings = self.readings(cfg)?;
        Ok(Sample {
            station_id: station_id.to_string(),
            msg_id: self.msg_id.to_string(),
            point_id,
            sampled_at,
            ph,
            depth_cm,
            method,
            readings,
            content_sha256: String::new(),
        })
    }

    fn sampled_at(
        &self,
        now: DateTime<Utc>,
        cfg: &IngestConfig,
    ) -> Result<DateTime<Utc>, Rejection> {
        let text = self.string("sampled_at", self.required("sampled_at")?)?;
        let at = DateTime::parse_from_rfc3339(&text)
            .map_err(|e| {
                self.reject(
                    RejectCode::BadTimestamp,
                    format!("sampled_at {text:?} is not RFC 3339 with an offset: {e}"),
                )
            })?
            .with_timezone(&Utc);
        let window = TimeWindow {
            earliest: cfg.earliest_sample,
            now,
            skew_secs: cfg.future_skew_secs,
        };
        window.check(at).map_err(|e| match e {
            RuleError::TooOld { earliest } => self.reject(
                RejectCode::BadTimestamp,
                format!("sampled_at {text} is before {earliest}"),
            ),
            // `InFuture`, the only other failure of the window.
            _ => self.reject(
                RejectCode::FutureTimestamp,
                format!(
                    "sampled_at {text} is more than {} s after the server time {now}",
                    cfg.future_skew_secs
                ),
            ),
        })?;
        Ok(at)
    }

    /// The optional `ph`, within 0–14.
    fn ph(&self) -> Result<Option<f64>, Rejection> {
        let Some(v) = self.obj.get("ph").filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let ph = self.number("ph", v)?;
        rules::check_ph(ph).map_err(|_| {
            self.reject(RejectCode::PhOutOfRange, format!("ph {ph} is outside 0-14"))
        })?;
        Ok(Some(ph))
    }

    fn depth(&self) -> Result<Option<(f64, f64)>, Rejection> {
        let Some(v) = self.obj.get("depth_cm").filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let bad = || {
            self.reject(
                RejectCode::BadType,
                "depth_cm must be [top, bottom] with 0 <= top < bottom".into(),
            )
        };
        let arr = v.as_array().filter(|a| a.len() == 2).ok_or_else(bad)?;
        let top = self.number("depth_cm[0]", &arr[0])?;
        let bottom = self.number("depth_cm[1]", &arr[1])?;
        if top < 0.0 || top >= bottom {
            return Err(bad());
        }
        Ok(Some((top, bottom)))
    }

    fn readings(&self, cfg: &IngestConfig) -> Result<Vec<ParsedReading>, Rejection> {
        let list = self
            .required("readings")?
            .as_array()
            .ok_or_else(|| self.reject(RejectCode::BadType, "readings must be an array".into()))?;
        if list.is_empty() {
            return Err(self.reject(RejectCode::MissingField, "readings is empty".into()));
        }
        if list.len() > MAX_READINGS {
            return Err(self.reject(
                RejectCode::BadType,
                format!("{} readings, at most {MAX_READINGS}", list.len()),
            ));
        }
        let mut out: Vec<ParsedReading> = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            let r = self.reading(i, item, cfg)?;
            if out.iter().any(|o| o.metal == r.metal) {
                return Err(self.reject(
                    RejectCode::DuplicateMetal,
                    format!("readings[{i}]: {} appears twice", r.metal),
                ));
            }
            out.push(r);
        }
        Ok(out)
    }

    fn reading(
        &self,
        i: usize,
        item: &Json<'_>,
        cfg: &IngestConfig,
    ) -> Result<ParsedReading, Rejection> {
        // Field names for refusals, formatted only when one is written.
        let at = |field: &'static str| ReadingField(i, field);
        let obj = item.as_object().ok_or_else(|| {
            self.reject(
                RejectCode::BadType,
                format!("readings[{i}] must be an object"),
            )
        })?;
        let get = |field: &'static str| match obj.get(field) {
            None | Some(Json::Null) => Err(self.reject(
                RejectCode::MissingField,
                format!("{} is required", at(field)),
            )),
            Some(v) => Ok(v),
        };
        let metal_text = self.string(&at("metal"), get("metal")?)?;
        let metal = Metal::parse(&metal_text).ok_or_else(|| {
            self.reject(
                RejectCode::UnknownMetal,
                format!("{}: unknown metal {metal_text:?}", at("metal")),
            )
        })?;
        let value = self.number(&at("value"), get("value")?)?;
        let unit_text = self.string(&at("unit"), get("unit")?)?;
        let unit = Unit::parse(&unit_text).ok_or_else(|| {
            self.reject(
                RejectCode::UnknownUnit,
                format!("{}: unknown unit {unit_text:?}", at("unit")),
            )
        })?;
        let detected = self.detected(obj.get("detected"), &at("detected"))?;
        let value_mgkg = rules::check_concentration(value, unit.to_mg_per_kg(), cfg.ceiling(metal))
            .map_err(|e| self.value_rejection(&at("value"), metal, e))?;
        Ok(ParsedReading {
            metal,
            value_orig: value,
            unit_orig: unit_text,
            value_mgkg,
            detected,
        })
    }

    /// A reading's optional `detected` flag (absent: detected).
    fn detected(
        &self,
        v: Option<&Json<'_>>,
        key: &(impl Display + ?Sized),
    ) -> Result<bool, Rejection> {
        match v {
            None | Some(Json::Null) => Ok(true),
            Some(Json::Bool(b)) => Ok(*b),
            Some(_) => {
                Err(self.reject(RejectCode::BadType, format!("{key} must be true or false")))
            }
        }
    }

    /// The refusal of a value that broke [`rules::check_concentration`].
    fn value_rejection(
        &self,
        key: &(impl Display + ?Sized),
        metal: Metal,
        e: RuleError,
    ) -> Rejection {
        match e {
            RuleError::Negative { value } => self.reject(
                RejectCode::NegativeValue,
                format!("{key}: {value} is negative"),
            ),
            RuleError::AboveCeiling {
                value_mgkg,
                ceiling_mgkg,
            } => self.reject(
                RejectCode::ImplausibleValue,
                format!(
                    "{key}: {value_mgkg} mg/kg {metal} is above the ceiling {ceiling_mgkg} mg/kg"
                ),
            ),
            // The concentration check breaks no other rule.
            other => self.reject(RejectCode::ImplausibleValue, format!("{key}: {other}")),
        }
    }
}

fn is_non_finite_word(s: &str) -> bool {
    matches!(
        s.trim().to_ascii_lowercase().as_str(),
        "nan" | "inf" | "-inf" | "+inf" | "infinity" | "-infinity" | "+infinity"
    )
}

/// `readings[i].field`, the name of a reading's field in a refusal's detail.
struct ReadingField(usize, &'static str);

impl Display for ReadingField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "readings[{}].{}", self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::point::{LandUse, Point, PointType};
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::Value;

    fn cfg() -> IngestConfig {
        let path =
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml"));
        match crate::config::Settings::load(path) {
            Ok(s) => s.ingest,
            Err(e) => panic!("default config: {e}"),
        }
    }

    fn registry() -> Registry {
        Registry::new(vec![Point {
            id: "441781-R-0003".into(),
            name: "t".into(),
            county_code: "441781".into(),
            lon: 111.7,
            lat: 22.1,
            point_type: PointType::Risk,
            land_use: LandUse::Paddy,
            ph: Some(6.0),
        }])
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0)
            .single()
            .unwrap_or_default()
    }

    const GOOD: &str = r#"{"msg_id": "st07-000123", "point_id": "441781-R-0003",
        "sampled_at": "2026-11-28T09:30:00+08:00", "ph": 6.2, "depth_cm": [0, 20],
        "method": "XRF", "extra": {"battery": 0.9},
        "readings": [{"metal": "Cd", "value": 420, "unit": "µg/kg"},
                     {"metal": "铅", "value": 10, "unit": "mg/kg", "detected": false}]}"#;

    #[test]
    fn the_contract_example_parses_and_normalises() {
        let s = parse("st07", GOOD.as_bytes(), now(), &cfg(), &registry())
            .unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(s.readings.len(), 2);
        assert!((s.readings[0].value_mgkg - 0.42).abs() < 1e-12);
        assert_eq!(s.readings[0].unit_orig, "µg/kg");
        assert_eq!(s.readings[1].metal, Metal::Pb);
        assert!(!s.readings[1].detected);
        assert_eq!(s.depth_cm, Some((0.0, 20.0)));
        let other = GOOD.replace("0.9", "0.8");
        assert_ne!(other, GOOD, "the example carries an extra battery field");
        let t = parse("st07", other.as_bytes(), now(), &cfg(), &registry())
            .unwrap_or_else(|r| panic!("{r:?}"));
        assert_ne!(
            s.content_sha256, t.content_sha256,
            "extra fields are part of the content"
        );
        assert_eq!(
            s.sampled_at,
            Utc.with_ymd_and_hms(2026, 11, 28, 1, 30, 0).unwrap()
        );
    }

    #[test]
    fn equal_content_has_equal_hash_whatever_the_key_order() {
        let a = parse("st07", GOOD.as_bytes(), now(), &cfg(), &registry()).ok();
        let v: Value = serde_json::from_str(GOOD).unwrap_or(Value::Null);
        let mut keys: Vec<(String, Value)> = v
            .as_object()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect();
        keys.reverse();
        let reordered = format!(
            "{{{}}}",
            keys.iter()
                .map(|(k, v)| format!("{k:?}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let b = parse("st07", reordered.as_bytes(), now(), &cfg(), &registry()).ok();
        assert_eq!(a.map(|s| s.content_sha256), b.map(|s| s.content_sha256));
    }

    #[test]
    fn refusals_keep_the_msg_id_when_readable() {
        let bad = GOOD.replace("\"Cd\"", "\"Fe\"");
        let r = parse("st07", bad.as_bytes(), now(), &cfg(), &registry()).unwrap_err();
        assert_eq!(r.code, RejectCode::UnknownMetal);
        assert_eq!(r.msg_id.as_deref(), Some("st07-000123"));
        let r = parse("st07", b"[1,", now(), &cfg(), &registry()).unwrap_err();
        assert_eq!(r.code, RejectCode::MalformedJson);
        assert_eq!(r.msg_id, None);
    }

    #[test]
    fn unparseable_refusals_carry_the_scanned_msg_id() {
        let nan = GOOD.replace("420", "NaN");
        let big = GOOD.replace("420", "1e400");
        let bom = format!("\u{feff}{GOOD}");
        let long_id = GOOD.replace("st07-000123", &"x".repeat(129));
        let mut huge = cfg();
        huge.max_payload_bytes = 100;
        let cases = [
            (
                nan.as_bytes(),
                cfg(),
                RejectCode::NonFiniteValue,
                "st07-000123".to_string(),
            ),
            (
                big.as_bytes(),
                cfg(),
                RejectCode::NonFiniteValue,
                "st07-000123".to_string(),
            ),
            (
                bom.as_bytes(),
                cfg(),
                RejectCode::MalformedJson,
                "st07-000123".to_string(),
            ),
            (
                GOOD.as_bytes(),
                huge,
                RejectCode::TooLarge,
                "st07-000123".to_string(),
            ),
            (
                long_id.as_bytes(),
                cfg(),
                RejectCode::BadType,
                "x".repeat(129),
            ),
        ];
        for (i, (bytes, cfg, code, id)) in cases.into_iter().enumerate() {
            let r = parse("st07", bytes, now(), &cfg, &registry()).unwrap_err();
            assert_eq!(
                (r.code, r.msg_id.as_deref()),
                (code, Some(id.as_str())),
                "case {i}"
            );
        }
    }

    #[test]
    fn msg_ids_are_counted_in_bytes_and_taken_as_sent() {
        let with_id = |id: &str| GOOD.replace("st07-000123", id);
        let ok = parse(
            "st07",
            with_id(&"样".repeat(42)).as_bytes(),
            now(),
            &cfg(),
            &registry(),
        );
        assert!(ok.is_ok(), "126 bytes: {ok:?}");
        let padded = parse(
            "st07",
            with_id(" id ").as_bytes(),
            now(),
            &cfg(),
            &registry(),
        );
        assert_eq!(padded.map(|s| s.msg_id).ok().as_deref(), Some(" id "));
        let long = parse(
            "st07",
            with_id(&"样".repeat(43)).as_bytes(),
            now(),
            &cfg(),
            &registry(),
        );
        assert_eq!(
            long.map_err(|r| r.code),
            Err(RejectCode::BadType),
            "129 bytes"
        );
    }

    /// Payloads whose content hash is pinned: the hash is stored for every message ever
    /// received, so a redelivery of an old message must hash the same forever.
    const HASH_VECTORS: [(&str, &str); 7] = [
        (
            GOOD,
            "84195995dedfae875728589ae3d6e5a50838c80778ef1a00e7d85f809c7beb6c",
        ),
        // The same content, keys reversed and spaced differently.
        (
            r#"{"readings":[{"unit":"µg/kg","value":420,"metal":"Cd"},
               {"detected":false,"unit":"mg/kg","value":10,"metal":"铅"}],"extra":{"battery":0.9},
               "method":"XRF","depth_cm":[0,20],"ph":6.2,
               "sampled_at":"2026-11-28T09:30:00+08:00","point_id":"441781-R-0003",
               "msg_id":"st07-000123"}"#,
            "84195995dedfae875728589ae3d6e5a50838c80778ef1a00e7d85f809c7beb6c",
        ),
        // Numbers as written in many ways.
        (
            r#"{"msg_id":"n1","point_id":"441781-R-0003","sampled_at":"2026-11-28T09:30:00Z",
               "readings":[{"metal":"Cd","value":1.0,"unit":"mg/kg"},
                           {"metal":"Pb","value":1e2,"unit":"mg/kg"},
                           {"metal":"Hg","value":-0,"unit":"mg/kg"}],
               "x":[1,1.0,1e2,1E+2,-0,-0.0,0.1,1.5e-7,123456789012345678901,
                    -9223372036854775808,18446744073709551615,18446744073709551616,
                    3.0e300,2.2250738585072014e-308,0.30000000000000004,1e-400]}"#,
            "b6b443191b4ebe70f03f2cf17aabb6c51bd1af5211f9ab04c991cded5158220f",
        ),
        // Unicode escapes and escapes in strings and keys.
        (
            r#"{"msg_id":"u\u0031","point_id":"441781-R-0003","sampled_at":"2026-11-28T09:30:00Z",
               "readings":[{"metal":"\u9549","value":0.2,"unit":"mg/kg"}],
               "note":"\u00e9\u4e2d\ud83d\ude00 \"q\" \\ \/ \n\t\r\b\f\u0001\u001f\u007f é",
               "\u00e9":1,"k\u0065y":"\u2028\u2029"}"#,
            "7a1da5ba407b746bd647d493300bb299f22351468152509c923ea7528da0f2cc",
        ),
        // Nested objects, keys needing a byte-order sort, empty containers.
        (
            r#"{"msg_id":"o1","point_id":"441781-R-0003","sampled_at":"2026-11-28T09:30:00Z",
               "readings":[{"metal":"Cd","value":0.2,"unit":"mg/kg","qc":{"z":1,"a":[{"b":{},"a":[]}]}}],
               "meta":{"b":{"y":[true,false,null],"x":"s"},"B":1,"a":2,"_":3,"Z":4,"ä":5,"10":6,"9":7,"":8}}"#,
            "3c138193240ffbbb479f367ffd502aa7bb19fc9fbbe8168a55113a9c0d0e9aa7",
        ),
        // A repeated key keeps its last value (also when spelled with an escape).
        (
            r#"{"msg_id":"d1","point_id":"441781-R-0003","sampled_at":"2026-11-28T09:30:00Z",
               "readings":[{"metal":"Cd","value":0.2,"unit":"mg/kg"}],
               "note":1,"note":{"a":2},"x\u0079":1,"xy":[3]}"#,
            "a7a9a5e407fa30afaae1b7db107c46afd7c5b678f37a45eced90ce732925ffdc",
        ),
        // serde_json's private raw-value key as the first key: the whole object is the string
        // inside, parsed.
        (
            r#"{"$serde_json::private::RawValue":"{\"msg_id\":\"r1\",\"point_id\":\"441781-R-0003\",\"sampled_at\":\"2026-11-28T09:30:00Z\",\"readings\":[{\"metal\":\"Cd\",\"value\":0.2,\"unit\":\"mg/kg\"}]}"}"#,
            "4e4f7663dfce6a6f8127e0e83e022698cc9055345bea7ef0dc085460abf3c773",
        ),
    ];

    #[test]
    fn content_hashes_match_the_pinned_vectors() {
        for (i, (payload, want)) in HASH_VECTORS.iter().enumerate() {
            let got = parse("st07", payload.as_bytes(), now(), &cfg(), &registry())
                .map(|s| s.content_sha256);
            assert_eq!(got.as_deref(), Ok(*want), "vector {i}");
        }
    }

    /// Station messages for the micro-benchmark: eight metals, with and without a pH.
    fn bench_messages(n: usize) -> Vec<String> {
        let metals = ["Cd", "Hg", "As", "Pb", "Cr", "Cu", "Ni", "Zn"];
        (0..n)
            .map(|i| {
                let readings: Vec<String> = metals
                    .iter()
                    .enumerate()
                    .map(|(k, m)| {
                        let v = 0.05 + ((i * 7 + k * 13) % 400) as f64 * 0.37;
                        format!(r#"{{"metal": "{m}", "value": {v}, "unit": "mg/kg"}}"#)
                    })
                    .collect();
                let ph = match i % 4 {
                    0 => String::new(),
                    r => format!(r#""ph": {}, "#, 4.5 + r as f64 * 1.1),
                };
                format!(
                    r#"{{"msg_id": "st07-{i:09}", "station_id": "st07", "point_id": "441781-R-0003",
                    "sampled_at": "2026-11-28T09:30:00+08:00", {ph}"depth_cm": [0, 20],
                    "method": "XRF", "extra": {{"battery": 0.9, "rssi": -71}},
                    "readings": [{}]}}"#,
                    readings.join(", ")
                )
            })
            .collect()
    }

    /// Micro-benchmark of the station hot path: parse (with the content hash) and judge.
    /// `cargo test --release --lib hot_path_micro_benchmark -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check: run it in release mode"]
    fn hot_path_micro_benchmark() {
        use crate::domain::judge::judge_at_point;
        use crate::domain::standard::RotationRule;
        use std::hint::black_box;
        use std::time::Instant;
        const N: usize = 20_000;
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/standards"));
        let standards = crate::config::load_standards(dir, RotationRule::Stricter)
            .unwrap_or_else(|e| panic!("standards: {e}"));
        let (cfg, registry) = (cfg(), registry());
        let messages = bench_messages(N);
        let started = Instant::now();
        let samples: Vec<Sample> = messages
            .iter()
            .map(|m| parse("st07", m.as_bytes(), now(), &cfg, &registry))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|r| panic!("{r:?}"));
        let parse_us = started.elapsed().as_secs_f64() * 1e6 / N as f64;
        let started = Instant::now();
        let mut exceedances = 0usize;
        for s in &samples {
            let Some(point) = registry.get(&s.point_id) else {
                panic!("unregistered point");
            };
            for r in &s.readings {
                let j = judge_at_point(&standards, point, s.ph, r.metal, r.value_mgkg, r.detected);
                exceedances += usize::from(j.level.exceeds());
                black_box(j);
            }
        }
        let judge_us = started.elapsed().as_secs_f64() * 1e6 / N as f64;
        println!(
            "hot path, {N} messages of 8 readings: parse {parse_us:.2} µs/msg, judge {judge_us:.2} µs/msg, \
             total {:.2} µs/msg ({exceedances} exceedances)",
            parse_us + judge_us
        );
    }

    proptest! {
        /// Arbitrary bytes never panic and always give a sample or a reason.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse("st", &bytes, now(), &cfg(), &registry());
        }

        /// Mutating the contract example anywhere never panics.
        #[test]
        fn mutated_examples_never_panic(pos in 0usize..400, byte in any::<u8>()) {
            let mut b = GOOD.as_bytes().to_vec();
            let i = pos % b.len();
            b[i] = byte;
            let _ = parse("st07", &b, now(), &cfg(), &registry());
        }

        /// Any finite non-negative value below the Cd ceiling, in a known unit, is accepted and
        /// normalised.
        #[test]
        fn valid_values_round_trip(v in 0.0f64..10_000.0, unit in prop::sample::select(vec!["mg/kg", "ppm", "µg/kg", "ppb"])) {
            let text = GOOD.replace("420", &format!("{v}")).replace("µg/kg", unit);
            let s = parse("st07", text.as_bytes(), now(), &cfg(), &registry());
            let s = s.map_err(|r| TestCaseError::fail(format!("{r:?}")))?;
            let factor = Unit::parse(unit).map_or(f64::NAN, Unit::to_mg_per_kg);
            prop_assert!((s.readings[0].value_mgkg - v * factor).abs() <= 1e-9 * v.max(1.0));
        }
    }
}
