//! Key supervised enterprises and development-land plots, pure: the unified social credit
//! code check (GB 32100-2015), the plot status ladder, and the land bureau's candidate rule
//! (a plot whose samples exceed screening is a suspected-contaminated-site candidate, one
//! exceeding intervention a risk-control candidate; candidates are listed, never applied).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::point::LandUse;

/// The 31 characters of a unified social credit code (no I, O, S, V, Z), by value.
const USCC_CHARS: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";

/// Why a unified social credit code is refused (the message starts with the code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsccError {
    /// Not 18 characters.
    #[error("bad_credit_code: {0:?} has {1} characters, not 18")]
    Length(String, usize),
    /// A character outside the code's alphabet.
    #[error("bad_credit_code: {0:?} contains {1:?}, not in 0-9 A-H J-N P-R T U W-Y")]
    Character(String, char),
    /// The 18th character is not the check character of the first 17.
    #[error(
        "bad_credit_check_digit: {code:?} ends in {found:?}; the check character is {expected:?}"
    )]
    CheckDigit {
        /// The code.
        code: String,
        /// Its last character.
        found: char,
        /// What GB 32100 computes.
        expected: char,
    },
}

/// Checks a unified social credit code (统一社会信用代码, GB 32100-2015): 18 characters of
/// the 31-character alphabet, the last the check character: with weights 3^(i-1) mod 31 on
/// positions 1–17, C18 = (31 − Σ Ci·Wi mod 31) mod 31. Lower case is accepted and upper-cased.
pub fn check_uscc(code: &str) -> Result<String, UsccError> {
    let code = code.trim().to_ascii_uppercase();
    let n = code.chars().count();
    if n != 18 {
        return Err(UsccError::Length(code, n));
    }
    let mut values = Vec::with_capacity(18);
    for c in code.chars() {
        let v = USCC_CHARS
            .iter()
            .position(|x| char::from(*x) == c)
            .ok_or_else(|| UsccError::Character(code.clone(), c))?;
        values.push(v);
    }
    let mut weight = 1;
    let mut sum = 0;
    for v in &values[..17] {
        sum += v * weight;
        weight = weight * 3 % 31;
    }
    let expected = char::from(USCC_CHARS[(31 - sum % 31) % 31]);
    let found = code.chars().last().unwrap_or(' ');
    if found != expected {
        return Err(UsccError::CheckDigit {
            code,
            found,
            expected,
        });
    }
    Ok(code)
}

/// A key supervised enterprise (重点监管企业) as registered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Enterprise {
    /// Unified social credit code (checked, upper case).
    pub credit_code: String,
    /// Name.
    pub name: String,
    /// Industry (free text, e.g. `lead-zinc mining`, `landfill`).
    pub industry: String,
    /// County code.
    pub county_code: String,
    /// Longitude (WGS84).
    pub lon: f64,
    /// Latitude (WGS84).
    pub lat: f64,
    /// Its monitoring points (registered point ids).
    pub points: Vec<String>,
}

/// Status of a development-land plot (地块), in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlotStatus {
    /// Suspected contaminated (疑似污染地块).
    Suspected,
    /// Surveyed (调查完成).
    Investigated,
    /// Under risk control or remediation (风险管控/修复).
    RiskControl,
    /// Remediated (修复完成).
    Remediated,
}

impl PlotStatus {
    /// The spelling (`suspected`, `investigated`, `risk_control`, `remediated`).
    pub fn as_str(self) -> &'static str {
        match self {
            PlotStatus::Suspected => "suspected",
            PlotStatus::Investigated => "investigated",
            PlotStatus::RiskControl => "risk_control",
            PlotStatus::Remediated => "remediated",
        }
    }

    /// Parses the spelling (`suspected`, `investigated`, `risk_control`, `remediated`).
    pub fn parse(s: &str) -> Option<PlotStatus> {
        match s.trim() {
            "suspected" => Some(PlotStatus::Suspected),
            "investigated" => Some(PlotStatus::Investigated),
            "risk_control" => Some(PlotStatus::RiskControl),
            "remediated" => Some(PlotStatus::Remediated),
            _ => None,
        }
    }

    /// Whether a plot may move from `self` to `next`: one step forward, or back to
    /// `suspected` (new evidence) from any later status.
    pub fn may_become(self, next: PlotStatus) -> bool {
        let step = |s: PlotStatus| match s {
            PlotStatus::Suspected => 0,
            PlotStatus::Investigated => 1,
            PlotStatus::RiskControl => 2,
            PlotStatus::Remediated => 3,
        };
        step(next) == step(self) + 1 || (next == PlotStatus::Suspected && self != next)
    }
}

/// What the land bureau is shown for a plot, from the worst level of its samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Candidate {
    /// A sample above GB 36600 screening: a suspected contaminated site candidate.
    SuspectedContaminated,
    /// A sample above intervention: a risk-control candidate.
    RiskControl,
}

/// The candidate list entry of a plot in `status` whose worst sample level is `worst`
/// (`screening`, `intervention`, …), `None` when nothing is to be proposed (no exceedance,
/// or the plot is already at or beyond the proposed status; a remediated plot that exceeds
/// again is proposed anew). Never changes the status.
pub fn candidate(status: Option<PlotStatus>, worst: &str) -> Option<Candidate> {
    let proposed = match worst {
        "intervention" => Candidate::RiskControl,
        "screening" => Candidate::SuspectedContaminated,
        _ => return None,
    };
    match (proposed, status) {
        // No status yet, or remediated and exceeding again: propose.
        (_, None | Some(PlotStatus::Remediated)) => Some(proposed),
        (Candidate::SuspectedContaminated, Some(_)) => None,
        (Candidate::RiskControl, Some(s)) if s >= PlotStatus::RiskControl => None,
        (Candidate::RiskControl, Some(_)) => Some(proposed),
    }
}

impl Candidate {
    /// The spelling (`suspected_contaminated`, `risk_control`).
    pub fn as_str(self) -> &'static str {
        match self {
            Candidate::SuspectedContaminated => "suspected_contaminated",
            Candidate::RiskControl => "risk_control",
        }
    }
}

/// A development-land plot (地块) as registered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plot {
    /// Plot id.
    pub plot_id: String,
    /// Name.
    pub name: String,
    /// County code.
    pub county_code: String,
    /// Planned use: GB 36600 first class ([`LandUse::DevelopmentFirst`]) or second class
    /// ([`LandUse::DevelopmentSecond`]).
    pub planned_use: LandUse,
    /// Status; `None`: registered, not (yet) suspected.
    pub status: Option<PlotStatus>,
    /// Its monitoring points (registered development-land points of its planned use).
    pub points: Vec<String>,
}

/// Parses a planned use: `first`/`second`, `development_first`/`development_second`, or the
/// Chinese class names (第一类用地, 第二类用地).
pub fn parse_planned_use(s: &str) -> Option<LandUse> {
    match s.trim() {
        "first" | "第一类用地" => Some(LandUse::DevelopmentFirst),
        "second" | "第二类用地" => Some(LandUse::DevelopmentSecond),
        other => LandUse::parse(other)
            .filter(|l| matches!(l, LandUse::DevelopmentFirst | LandUse::DevelopmentSecond)),
    }
}

/// One soil reading of a plot's point, as candidate evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlotReading {
    /// Point.
    pub point_id: String,
    /// Metal symbol.
    pub metal: String,
    /// Sampling time.
    pub sampled_at: DateTime<Utc>,
    /// Its campaign (sampling year, UTC+8).
    pub campaign: String,
    /// `station` or `lab`.
    pub source: String,
    /// Station id or lab batch id.
    pub source_id: String,
    /// Message or sample id.
    pub msg_id: String,
    /// Value, mg/kg.
    pub value_mgkg: f64,
    /// Level (`none`, `screening`, `intervention`, …).
    pub level: String,
}

/// The reading that stands for each (point, metal), lab first: the newest campaign decides,
/// and within it the newest lab result, where one exists, outranks any field screening
/// (station) reading however newer (lab ICP-MS/AFS is the authoritative method). Sorted by
/// point and metal.
pub fn authoritative(readings: &[PlotReading]) -> Vec<&PlotReading> {
    fn rank(r: &PlotReading) -> (&str, bool, DateTime<Utc>) {
        (r.campaign.as_str(), r.source == "lab", r.sampled_at)
    }
    let mut best: std::collections::BTreeMap<(&str, &str), &PlotReading> = Default::default();
    for r in readings {
        let key = (r.point_id.as_str(), r.metal.as_str());
        match best.get(&key) {
            Some(b) if rank(b) >= rank(r) => {}
            _ => {
                best.insert(key, r);
            }
        }
    }
    best.into_values().collect()
}

/// The worst level among `readings` (`intervention` over `screening` over anything else,
/// which is `none` for the candidate rule).
pub fn worst_level<'a>(readings: impl IntoIterator<Item = &'a PlotReading>) -> &'static str {
    let mut worst = "none";
    for r in readings {
        match r.level.as_str() {
            "intervention" => return "intervention",
            "screening" => worst = "screening",
            _ => {}
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_codes_are_checked_by_their_check_character() {
        // A code often quoted as an example; its check character is 3.
        assert_eq!(
            check_uscc("91350100M000100Y43").as_deref(),
            Ok("91350100M000100Y43")
        );
        assert_eq!(
            check_uscc("91350100m000100y43").as_deref(),
            Ok("91350100M000100Y43")
        );
        let wrong = check_uscc("91350100M000100Y44").unwrap_err();
        assert!(
            matches!(wrong, UsccError::CheckDigit { expected: '3', .. }),
            "{wrong}"
        );
        assert!(wrong.to_string().starts_with("bad_credit_check_digit"));
        assert!(matches!(
            check_uscc("91350100M000100Y4"),
            Err(UsccError::Length(_, 17))
        ));
        assert!(matches!(
            check_uscc("91350100M0001O0Y43"),
            Err(UsccError::Character(_, 'O'))
        ));
        // A check value of 0 (31 − 0) maps to '0', not to an out-of-range character.
        assert_eq!(
            check_uscc("000000000000000000").as_deref(),
            Ok("000000000000000000")
        );
    }

    #[test]
    fn plot_status_moves_one_step_or_back_to_suspected() {
        use PlotStatus::*;
        assert!(Suspected.may_become(Investigated));
        assert!(Investigated.may_become(RiskControl));
        assert!(RiskControl.may_become(Remediated));
        assert!(!Suspected.may_become(Remediated));
        assert!(!Remediated.may_become(Investigated));
        assert!(Remediated.may_become(Suspected));
        assert!(!Suspected.may_become(Suspected));
        assert_eq!(PlotStatus::parse("risk_control"), Some(RiskControl));
        assert_eq!(PlotStatus::parse("clean"), None);
    }

    #[test]
    fn candidates_follow_the_worst_level_and_the_status() {
        use PlotStatus::*;
        assert_eq!(candidate(None, "none"), None);
        assert_eq!(
            candidate(None, "screening"),
            Some(Candidate::SuspectedContaminated)
        );
        assert_eq!(
            candidate(None, "intervention"),
            Some(Candidate::RiskControl)
        );
        assert_eq!(candidate(Some(Suspected), "screening"), None);
        assert_eq!(
            candidate(Some(Investigated), "intervention"),
            Some(Candidate::RiskControl)
        );
        assert_eq!(candidate(Some(RiskControl), "intervention"), None);
        assert_eq!(
            candidate(Some(Remediated), "intervention"),
            Some(Candidate::RiskControl),
            "exceeding again after remediation"
        );
        assert_eq!(candidate(None, "no_standard"), None);
    }

    fn reading(point: &str, at: &str, source: &str, level: &str) -> PlotReading {
        let sampled_at = at.parse().unwrap_or_default();
        PlotReading {
            point_id: point.into(),
            metal: "Pb".into(),
            sampled_at,
            campaign: at[..4].into(),
            source: source.into(),
            source_id: "x".into(),
            msg_id: "y".into(),
            value_mgkg: 1.0,
            level: level.into(),
        }
    }

    #[test]
    fn a_lab_result_outranks_a_newer_screening_of_its_campaign_only() {
        let lab = reading("P", "2026-03-01T00:00:00Z", "lab", "screening");
        let xrf = reading("P", "2026-11-01T00:00:00Z", "station", "none");
        let both = [lab.clone(), xrf.clone()];
        assert_eq!(authoritative(&both), [&lab]);
        assert_eq!(worst_level(authoritative(&both)), "screening");
        // A newer campaign's screening replaces an older campaign's lab result.
        let next = reading("P", "2027-02-01T00:00:00Z", "station", "none");
        let three = [lab.clone(), xrf, next.clone()];
        assert_eq!(authoritative(&three), [&next]);
        assert_eq!(worst_level(authoritative(&three)), "none");
        let other = reading("Q", "2026-03-01T00:00:00Z", "station", "intervention");
        assert_eq!(worst_level(authoritative(&[lab, other])), "intervention");
    }

    #[test]
    fn planned_uses_are_the_two_gb36600_classes() {
        assert_eq!(parse_planned_use("first"), Some(LandUse::DevelopmentFirst));
        assert_eq!(
            parse_planned_use("第二类用地"),
            Some(LandUse::DevelopmentSecond)
        );
        assert_eq!(
            parse_planned_use("development_second"),
            Some(LandUse::DevelopmentSecond)
        );
        assert_eq!(parse_planned_use("paddy"), None);
        assert_eq!(parse_planned_use("third"), None);
    }
}
