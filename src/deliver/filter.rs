//! Subscription filters, pure: which alert events a subscription receives.
//!
//! A filter lists allowed values per field; an empty list allows every value, except for
//! `states`: empty means the exceedance states ([`STATES`]); overdue events (network
//! management: `overdue`, `overdue_cleared`) and the console's incident workflow events
//! (`incident_action`) are received only when a subscription names them ([`OPT_IN_STATES`]).
//! A field an event does not carry (an overdue event has no metal, a workflow event no
//! level) does not exclude it; the county always applies. The bureau's
//! own county scope always applies on top of the filter, so a subscription can narrow what
//! its bureau may read, never widen it. [`Filters::check`] refuses, at `subscriptions add`,
//! any value soilmon would never send.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::metal::Metal;

/// Incident states an event can carry (the wire contract's `state`).
pub const STATES: [&str; 5] = [
    "opened",
    "escalated",
    "deescalated",
    "cleared",
    "late_exceedance",
];
/// Event kinds received only when named in `states`: overdue points (and their clearing)
/// from network management, and incident workflow actions from the console.
pub const OPT_IN_STATES: [&str; 3] = ["overdue", "overdue_cleared", "incident_action"];
/// Event levels.
pub const LEVELS: [&str; 2] = ["screening", "intervention"];
/// Sources of a reading.
pub const SOURCES: [&str; 2] = ["station", "lab"];

/// Farmland (GB 15618) or development land (GB 36600).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LandClass {
    /// Every land use judged by GB 15618-2018.
    Farmland,
    /// First- and second-class development land (GB 36600-2018).
    Development,
}

impl LandClass {
    /// Parses `farmland` / `development` (or 农用地 / 建设用地).
    pub fn parse(text: &str) -> Option<LandClass> {
        match text.trim() {
            "farmland" | "农用地" => Some(LandClass::Farmland),
            "development" | "建设用地" => Some(LandClass::Development),
            _ => None,
        }
    }

    /// The class of a registry land use spelling (`paddy`, `development_first`, …).
    pub fn of_land_use(land_use: &str) -> LandClass {
        if land_use.starts_with("development") {
            LandClass::Development
        } else {
            LandClass::Farmland
        }
    }
}

/// The counties a bureau may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A city-wide bureau.
    All,
    /// These county codes only.
    Counties(Vec<String>),
}

impl Scope {
    /// Whether the scope covers `county`.
    pub fn covers(&self, county: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Counties(c) => c.iter().any(|x| x == county),
        }
    }
}

/// A subscription's filters, stored as JSON in `subscriptions.filters`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filters {
    /// County codes (within the bureau's scope); empty: all of the bureau's counties.
    pub counties: Vec<String>,
    /// Metal symbols (`Cd`, `Pb`, …); empty: all.
    pub metals: Vec<String>,
    /// `screening` / `intervention`; empty: both.
    pub levels: Vec<String>,
    /// Event states (`opened`, `escalated`, `deescalated`, `cleared`, `late_exceedance`);
    /// empty: all.
    pub states: Vec<String>,
    /// `station` / `lab`; empty: both.
    pub sources: Vec<String>,
    /// Land-use class; `None`: both.
    pub land_class: Option<LandClass>,
}

/// Why a filter was refused at `add` time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A county the bureau may not read.
    #[error("county {0:?} is outside the bureau's scope ({1})")]
    OutsideScope(String, String),
    /// A value that no event carries.
    #[error("unknown {field} {value:?} (one of: {allowed})")]
    Unknown {
        /// The filter field.
        field: &'static str,
        /// The refused value.
        value: String,
        /// What is allowed.
        allowed: String,
    },
}

fn check_list(field: &'static str, values: &[String], allowed: &[&str]) -> Result<(), FilterError> {
    match values.iter().find(|v| !allowed.contains(&v.as_str())) {
        None => Ok(()),
        Some(v) => Err(FilterError::Unknown {
            field,
            value: v.clone(),
            allowed: allowed.join(", "),
        }),
    }
}

/// Whether `value` is allowed by `list`: an empty list allows everything, and so does an
/// event without the field.
fn allows(list: &[String], value: Option<&str>) -> bool {
    list.is_empty() || value.map_or(true, |v| list.iter().any(|x| x == v))
}

/// The filter state of an event: its `state`, or `incident_action` for a workflow event.
pub fn event_state(payload: &Value) -> &str {
    match payload.get("event").and_then(Value::as_str) {
        Some("incident_action") => "incident_action",
        _ => payload.get("state").and_then(Value::as_str).unwrap_or(""),
    }
}

impl Filters {
    /// Normalises metal spellings (`镉` → `Cd`) and checks every value against what events
    /// carry and the counties against the bureau's `scope`.
    pub fn check(mut self, scope: &Scope) -> Result<Filters, FilterError> {
        for c in &self.counties {
            if !scope.covers(c) {
                let s = match scope {
                    Scope::All => "all".to_string(),
                    Scope::Counties(c) => c.join(", "),
                };
                return Err(FilterError::OutsideScope(c.clone(), s));
            }
        }
        let mut metals = Vec::new();
        for m in &self.metals {
            match Metal::parse(m) {
                Some(m) => metals.push(m.symbol().to_string()),
                None => {
                    let all: Vec<&str> = Metal::ALL.iter().map(|m| m.symbol()).collect();
                    return Err(FilterError::Unknown {
                        field: "metal",
                        value: m.clone(),
                        allowed: all.join(", "),
                    });
                }
            }
        }
        self.metals = metals;
        check_list("level", &self.levels, &LEVELS)?;
        let states: Vec<&str> = STATES.iter().chain(&OPT_IN_STATES).copied().collect();
        check_list("state", &self.states, &states)?;
        check_list("source", &self.sources, &SOURCES)?;
        Ok(self)
    }

    /// Whether the alert event `payload` (the wire contract's JSON) passes the filters and
    /// the bureau's `scope`.
    pub fn matches(&self, scope: &Scope, payload: &Value) -> bool {
        let field = |k: &str| payload.get(k).and_then(Value::as_str);
        let county = field("county_code").unwrap_or_default();
        let class = field("land_use").map(LandClass::of_land_use);
        let state = event_state(payload);
        let state_ok = if self.states.is_empty() {
            STATES.contains(&state)
        } else {
            self.states.iter().any(|s| s == state)
        };
        scope.covers(county)
            && state_ok
            && allows(&self.counties, Some(county))
            && allows(&self.metals, field("metal"))
            && allows(&self.levels, field("level"))
            && allows(&self.sources, field("source"))
            && (self.land_class.is_none() || class.is_none() || class == self.land_class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(county: &str, metal: &str, level: &str, state: &str, land_use: &str) -> Value {
        json!({"county_code": county, "metal": metal, "level": level, "state": state,
               "land_use": land_use, "source": "station"})
    }

    fn yangchun() -> Scope {
        Scope::Counties(vec!["441781".into()])
    }

    #[test]
    fn empty_filters_pass_everything_in_scope_only() {
        let f = Filters::default();
        assert!(f.matches(
            &yangchun(),
            &event("441781", "Cd", "screening", "opened", "paddy")
        ));
        assert!(!f.matches(
            &yangchun(),
            &event("441702", "Cd", "screening", "opened", "paddy")
        ));
        assert!(f.matches(
            &Scope::All,
            &event("441702", "Cd", "screening", "opened", "paddy")
        ));
    }

    #[test]
    fn cd_intervention_only() {
        let f = Filters {
            metals: vec!["镉".into()],
            levels: vec!["intervention".into()],
            ..Filters::default()
        }
        .check(&yangchun())
        .unwrap();
        assert_eq!(f.metals, ["Cd"]);
        let s = yangchun();
        assert!(f.matches(
            &s,
            &event("441781", "Cd", "intervention", "escalated", "paddy")
        ));
        assert!(!f.matches(&s, &event("441781", "Cd", "screening", "opened", "paddy")));
        assert!(!f.matches(
            &s,
            &event("441781", "Pb", "intervention", "opened", "paddy")
        ));
        assert!(!f.matches(
            &s,
            &event("441702", "Cd", "intervention", "opened", "paddy")
        ));
    }

    #[test]
    fn land_class_states_and_sources() {
        let f = Filters {
            land_class: Some(LandClass::Development),
            states: vec!["opened".into()],
            sources: vec!["station".into()],
            ..Filters::default()
        };
        let s = Scope::All;
        assert!(f.matches(
            &s,
            &event("441781", "Pb", "screening", "opened", "development_first")
        ));
        assert!(!f.matches(&s, &event("441781", "Pb", "screening", "opened", "paddy")));
        assert!(!f.matches(
            &s,
            &event("441781", "Pb", "screening", "cleared", "development_first")
        ));
        let mut lab = event("441781", "Pb", "screening", "opened", "development_first");
        lab["source"] = json!("lab");
        assert!(!f.matches(&s, &lab));
    }

    #[test]
    fn overdue_and_workflow_events_only_on_request() {
        let overdue = json!({"state": "overdue", "county_code": "441781", "land_use": "paddy",
                             "point_id": "p"});
        let action = json!({"event": "incident_action", "action": "acknowledge",
                            "county_code": "441781", "metal": "Cd", "point_id": "p"});
        let s = yangchun();
        assert!(!Filters::default().matches(&s, &overdue));
        assert!(!Filters::default().matches(&s, &action));
        let f = Filters {
            states: vec!["overdue".into(), "incident_action".into()],
            metals: vec!["Cd".into()],
            levels: vec!["intervention".into()],
            ..Filters::default()
        }
        .check(&s)
        .unwrap();
        assert!(f.matches(&s, &overdue));
        assert!(f.matches(&s, &action));
        let mut pb = action.clone();
        pb["metal"] = json!("Pb");
        assert!(!f.matches(&s, &pb));
        let mut elsewhere = overdue.clone();
        elsewhere["county_code"] = json!("441702");
        assert!(!f.matches(&s, &elsewhere));
        assert!(!f.matches(
            &s,
            &event("441781", "Cd", "intervention", "opened", "paddy")
        ));
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        let outside = Filters {
            counties: vec!["441702".into()],
            ..Filters::default()
        };
        assert_eq!(
            outside.check(&yangchun()).unwrap_err(),
            FilterError::OutsideScope("441702".into(), "441781".into())
        );
        let bad_metal = Filters {
            metals: vec!["Fe".into()],
            ..Filters::default()
        };
        assert!(matches!(
            bad_metal.check(&Scope::All),
            Err(FilterError::Unknown { field: "metal", .. })
        ));
        let bad_level = Filters {
            levels: vec!["severe".into()],
            ..Filters::default()
        };
        let e = bad_level.check(&Scope::All).unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown level \"severe\" (one of: screening, intervention)"
        );
    }
}
