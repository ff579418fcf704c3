//! Soil–crop co-monitoring, pure: the GB 2762 food limits crop samples are judged against,
//! the farmland category rules (soil tier × crop state → legal category), both validated
//! data (`config/standards/gb2762-2022.toml`, `config/categories/*.toml`), and the
//! classification of one point in one campaign with the results that decided it.

use serde::{Deserialize, Serialize};

use super::metal::Metal;

/// Why a food-limit or category-rule file was refused (the message starts with the code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CropError {
    /// The TOML does not parse into the expected shape.
    #[error("malformed_rules: {0}")]
    Malformed(String),
    /// A limit names an unknown metal or a non-positive value.
    #[error("bad_limit: category {category:?}: {detail}")]
    BadLimit {
        /// The food category.
        category: String,
        /// What is wrong.
        detail: String,
    },
    /// Two categories share an id or a name.
    #[error("duplicate_category: {0:?}")]
    DuplicateCategory(String),
    /// The category table misses or repeats a soil tier × crop state pair, or names an
    /// unknown one.
    #[error("incomplete_rules: {0}")]
    IncompleteRules(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FoodFile {
    food_standard: FoodHeader,
    category: Vec<CategoryFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FoodHeader {
    id: String,
    version: String,
    title: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryFile {
    id: String,
    names: Vec<String>,
    group: String,
    limits: Vec<LimitFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitFile {
    metal: String,
    mgkg: f64,
    confirmed: bool,
    source: String,
}

/// A food limit of one metal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoodLimit {
    /// The metal.
    pub metal: Metal,
    /// Maximum level, mg/kg.
    pub mgkg: f64,
    /// Whether the value is checked against the cited source.
    pub confirmed: bool,
    /// Table reference.
    pub source: String,
}

/// A food category of GB 2762 (the matrix of a crop sample).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoodCategory {
    /// Stable id (`rice`, `leafy_vegetable`, …).
    pub id: String,
    /// Names a lab row may use for it (lower-cased).
    pub names: Vec<String>,
    /// Group (cereal, vegetable, oilseed).
    pub group: String,
    /// Limits by metal.
    pub limits: Vec<FoodLimit>,
}

/// The food contaminant limits in force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoodStandard {
    /// Standard id, e.g. `GB 2762-2022`.
    pub id: String,
    /// Version.
    pub version: String,
    /// Title.
    pub title: String,
    /// Categories.
    pub categories: Vec<FoodCategory>,
}

/// How a crop result compares with its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CropLevel {
    /// No limit for this metal in this category: stored, never decides.
    NoLimit,
    /// At or below the limit (equality never exceeds), or a non-detect with MDL ≤ limit.
    WithinLimit,
    /// A non-detect whose MDL is above the limit: cannot be judged.
    Undeterminable,
    /// Above the limit.
    Exceeding,
    /// Above `severe_factor` × the limit.
    SeverelyExceeding,
}

impl CropLevel {
    /// The database and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CropLevel::NoLimit => "no_limit",
            CropLevel::WithinLimit => "within_limit",
            CropLevel::Undeterminable => "undeterminable",
            CropLevel::Exceeding => "exceeding",
            CropLevel::SeverelyExceeding => "severely_exceeding",
        }
    }

    /// Parses [`CropLevel::as_str`].
    pub fn parse(s: &str) -> Option<CropLevel> {
        [
            CropLevel::NoLimit,
            CropLevel::WithinLimit,
            CropLevel::Undeterminable,
            CropLevel::Exceeding,
            CropLevel::SeverelyExceeding,
        ]
        .into_iter()
        .find(|l| l.as_str() == s)
    }
}

impl FoodStandard {
    /// Whether a standards-directory TOML text is a food standard (not a soil standard).
    pub fn is_food_standard(text: &str) -> bool {
        toml::from_str::<toml::Table>(text).is_ok_and(|t| t.contains_key("food_standard"))
    }

    /// Parses and checks a food-limit file.
    pub fn from_toml(text: &str) -> Result<FoodStandard, CropError> {
        let file: FoodFile =
            toml::from_str(text).map_err(|e| CropError::Malformed(e.to_string()))?;
        let mut categories: Vec<FoodCategory> = Vec::new();
        for c in file.category {
            let names: Vec<String> = c.names.iter().map(|n| n.trim().to_lowercase()).collect();
            let clash = categories
                .iter()
                .any(|k| k.id == c.id || k.names.iter().any(|n| names.contains(n)));
            if clash {
                return Err(CropError::DuplicateCategory(c.id));
            }
            let limits = c
                .limits
                .into_iter()
                .map(|l| {
                    let bad = |detail: String| CropError::BadLimit {
                        category: c.id.clone(),
                        detail,
                    };
                    let metal = Metal::parse(&l.metal)
                        .ok_or_else(|| bad(format!("unknown metal {:?}", l.metal)))?;
                    if !(l.mgkg.is_finite() && l.mgkg > 0.0) {
                        return Err(bad(format!("{metal}: limit {} is not positive", l.mgkg)));
                    }
                    Ok(FoodLimit {
                        metal,
                        mgkg: l.mgkg,
                        confirmed: l.confirmed,
                        source: l.source,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            categories.push(FoodCategory {
                id: c.id,
                names,
                group: c.group,
                limits,
            });
        }
        let h = file.food_standard;
        Ok(FoodStandard {
            id: h.id,
            version: h.version,
            title: h.title,
            categories,
        })
    }

    /// The category a lab row's `matrix` names (id or alias, any case).
    pub fn category(&self, matrix: &str) -> Option<&FoodCategory> {
        let m = matrix.trim().to_lowercase();
        self.categories
            .iter()
            .find(|c| c.id == m || c.names.contains(&m))
    }
}

impl FoodCategory {
    /// The limit of `metal`, if the category has one.
    pub fn limit(&self, metal: Metal) -> Option<&FoodLimit> {
        self.limits.iter().find(|l| l.metal == metal)
    }

    /// Judges one crop result (`value_mgkg` is the MDL for a non-detect).
    pub fn judge(
        &self,
        metal: Metal,
        value_mgkg: f64,
        detected: bool,
        severe_factor: f64,
    ) -> CropLevel {
        let Some(limit) = self.limit(metal) else {
            return CropLevel::NoLimit;
        };
        if value_mgkg <= limit.mgkg {
            CropLevel::WithinLimit
        } else if !detected {
            CropLevel::Undeterminable
        } else if value_mgkg > severe_factor * limit.mgkg {
            CropLevel::SeverelyExceeding
        } else {
            CropLevel::Exceeding
        }
    }
}

/// A farmland point's soil screening tier (GB 15618, soil only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SoilTier {
    /// Every metal at or below screening.
    PriorityProtection,
    /// Some metal above screening, none above intervention.
    SafeUtilisation,
    /// Some metal above intervention.
    StrictControl,
}

impl SoilTier {
    /// The spelling in files and outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            SoilTier::PriorityProtection => "priority_protection",
            SoilTier::SafeUtilisation => "safe_utilisation",
            SoilTier::StrictControl => "strict_control",
        }
    }

    fn parse(s: &str) -> Option<SoilTier> {
        [
            SoilTier::PriorityProtection,
            SoilTier::SafeUtilisation,
            SoilTier::StrictControl,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// What the crops of a point in a campaign say, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CropState {
    /// Every judged crop result within its limit.
    NoneExceeding,
    /// Some result above its limit.
    Exceeding,
    /// Some result above `severe_factor` × its limit.
    SeverelyExceeding,
}

impl CropState {
    /// The spelling in files and outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            CropState::NoneExceeding => "none_exceeding",
            CropState::Exceeding => "exceeding",
            CropState::SeverelyExceeding => "severely_exceeding",
        }
    }

    fn parse(s: &str) -> Option<CropState> {
        [
            CropState::NoneExceeding,
            CropState::Exceeding,
            CropState::SeverelyExceeding,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    id: String,
    version: String,
    source: String,
    severe_factor: f64,
    severe_factor_confirmed: bool,
    rule: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    soil: String,
    crop: String,
    category: String,
    confirmed: bool,
}

/// One row of the category table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CategoryRule {
    /// Soil tier.
    pub soil: SoilTier,
    /// Crop state.
    pub crop: CropState,
    /// The legal category (spelled like a soil tier).
    pub category: SoilTier,
    /// Whether checked against the guideline text.
    pub confirmed: bool,
}

/// The farmland category rules in force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoryRules {
    /// File id.
    pub id: String,
    /// Version (stored with every classification).
    pub version: String,
    /// Source.
    pub source: String,
    /// Crop results above this multiple of the limit are severely exceeding.
    pub severe_factor: f64,
    /// Whether the factor is checked against the guideline.
    pub severe_factor_confirmed: bool,
    /// The table: every soil tier × crop state exactly once.
    pub rules: Vec<CategoryRule>,
}

impl CategoryRules {
    /// Parses and checks the category table (complete, no repeats, known names).
    pub fn from_toml(text: &str) -> Result<CategoryRules, CropError> {
        let file: RulesFile =
            toml::from_str(text).map_err(|e| CropError::Malformed(e.to_string()))?;
        if !(file.severe_factor.is_finite() && file.severe_factor >= 1.0) {
            return Err(CropError::Malformed(
                "severe_factor must be at least 1".into(),
            ));
        }
        let unknown =
            |what: &str, s: &str| CropError::IncompleteRules(format!("unknown {what} {s:?}"));
        let mut rules: Vec<CategoryRule> = Vec::new();
        for r in file.rule {
            let soil = SoilTier::parse(&r.soil).ok_or_else(|| unknown("soil tier", &r.soil))?;
            let crop = CropState::parse(&r.crop).ok_or_else(|| unknown("crop state", &r.crop))?;
            let category =
                SoilTier::parse(&r.category).ok_or_else(|| unknown("category", &r.category))?;
            if rules.iter().any(|x| x.soil == soil && x.crop == crop) {
                return Err(CropError::IncompleteRules(format!(
                    "{} x {} given twice",
                    r.soil, r.crop
                )));
            }
            rules.push(CategoryRule {
                soil,
                crop,
                category,
                confirmed: r.confirmed,
            });
        }
        if rules.len() != 9 {
            return Err(CropError::IncompleteRules(format!(
                "{} of the 9 soil tier x crop state pairs given",
                rules.len()
            )));
        }
        Ok(CategoryRules {
            id: file.id,
            version: file.version,
            source: file.source,
            severe_factor: file.severe_factor,
            severe_factor_confirmed: file.severe_factor_confirmed,
            rules,
        })
    }

    /// The legal category of a soil tier and a crop state.
    pub fn category(&self, soil: SoilTier, crop: CropState) -> Option<SoilTier> {
        self.rules
            .iter()
            .find(|r| r.soil == soil && r.crop == crop)
            .map(|r| r.category)
    }
}

/// The outcome for one point in one campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Classified {
    /// Soil and crop data: the legal category.
    Category {
        /// The category.
        category: SoilTier,
        /// Soil tier.
        soil: SoilTier,
        /// Crop state.
        crop: CropState,
    },
    /// No judged crop result: the soil screening tier only, never a legal category.
    SoilTierOnly {
        /// Soil tier.
        soil: SoilTier,
    },
    /// No soil level (no judged soil sample, or only undeterminable ones): nothing to say.
    Undetermined,
}

/// The soil tier from the latest level of each metal, worst first: an exceedance decides;
/// otherwise an `undeterminable` metal leaves the tier undetermined (a finding, not a pass);
/// `no_standard` is ignored. `None` when nothing decides.
pub fn soil_tier<'a>(levels: impl IntoIterator<Item = &'a str>) -> Option<SoilTier> {
    let mut worst = None;
    let mut undeterminable = false;
    for l in levels {
        let tier = match l {
            "none" => SoilTier::PriorityProtection,
            "screening" => SoilTier::SafeUtilisation,
            "intervention" => SoilTier::StrictControl,
            "undeterminable" => {
                undeterminable = true;
                continue;
            }
            _ => continue,
        };
        worst = worst.max(Some(tier));
    }
    match worst {
        Some(SoilTier::PriorityProtection) | None if undeterminable => None,
        w => w,
    }
}

/// The crop state from crop levels (`no_limit` and `undeterminable` never decide), `None`
/// without a judged crop result.
pub fn crop_state(levels: impl IntoIterator<Item = CropLevel>) -> Option<CropState> {
    levels
        .into_iter()
        .filter_map(|l| match l {
            CropLevel::WithinLimit => Some(CropState::NoneExceeding),
            CropLevel::Exceeding => Some(CropState::Exceeding),
            CropLevel::SeverelyExceeding => Some(CropState::SeverelyExceeding),
            CropLevel::NoLimit | CropLevel::Undeterminable => None,
        })
        .max()
}

/// Classifies one point in one campaign.
pub fn classify(
    rules: &CategoryRules,
    soil: Option<SoilTier>,
    crop: Option<CropState>,
) -> Classified {
    match (soil, crop) {
        (None, _) => Classified::Undetermined,
        (Some(soil), None) => Classified::SoilTierOnly { soil },
        (Some(soil), Some(crop)) => match rules.category(soil, crop) {
            Some(category) => Classified::Category {
                category,
                soil,
                crop,
            },
            // The table is complete (checked at load).
            None => Classified::SoilTierOnly { soil },
        },
    }
}

/// A soil reading as evidence: the latest of its metal in its campaign.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SoilEvidence {
    /// Campaign (sampling year).
    pub campaign: String,
    /// Metal.
    pub metal: Metal,
    /// Judgement level (`none`, `screening`, …).
    pub level: String,
    /// Value, mg/kg.
    pub value_mgkg: f64,
    /// Sample time.
    pub sampled_at: chrono::DateTime<chrono::Utc>,
    /// `station` or `lab`.
    pub source: String,
    /// Station or batch id.
    pub source_id: String,
    /// Message or sample id.
    pub msg_id: String,
}

/// A crop result as evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CropEvidence {
    /// Campaign (sampling year).
    pub campaign: String,
    /// Food category.
    pub food_category: String,
    /// Metal.
    pub metal: Metal,
    /// Value, mg/kg.
    pub value_mgkg: f64,
    /// The limit, mg/kg.
    pub limit_mgkg: Option<f64>,
    /// Level against the limit.
    pub level: CropLevel,
    /// Sample time.
    pub sampled_at: chrono::DateTime<chrono::Utc>,
    /// Lab batch id.
    pub batch_id: String,
    /// Sample id.
    pub sample_id: String,
}

/// The classification of one point in one campaign, with what decided it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignResult {
    /// Campaign (sampling year).
    pub campaign: String,
    /// The outcome.
    pub result: Classified,
    /// True when the outcome differs from the previous campaign's (false for the first).
    pub changed: bool,
    /// Soil evidence: the latest reading of each metal up to this campaign.
    pub soil: Vec<SoilEvidence>,
    /// Crop evidence: this campaign's crop results.
    pub crops: Vec<CropEvidence>,
}

/// A point's history, one entry per campaign in which it has a soil or crop sample, oldest
/// first. The soil tier of a campaign is that of the latest reading of each metal sampled up
/// to its end (soil is not resampled every year); the crop state is that of the campaign's own
/// crop results. `soil` must hold one reading per (campaign, metal): the one that stands for
/// it (the campaign's latest lab result where one exists, else its latest reading).
pub fn history(
    rules: &CategoryRules,
    soil: &[SoilEvidence],
    crops: &[CropEvidence],
) -> Vec<CampaignResult> {
    let mut campaigns: Vec<&str> = soil
        .iter()
        .map(|s| s.campaign.as_str())
        .chain(crops.iter().map(|c| c.campaign.as_str()))
        .collect();
    campaigns.sort_unstable();
    campaigns.dedup();
    let mut out: Vec<CampaignResult> = Vec::new();
    for campaign in campaigns {
        let mut latest: std::collections::BTreeMap<Metal, &SoilEvidence> = Default::default();
        for s in soil.iter().filter(|s| s.campaign.as_str() <= campaign) {
            let newer = latest
                .get(&s.metal)
                .map_or(true, |l| l.campaign < s.campaign);
            if newer {
                latest.insert(s.metal, s);
            }
        }
        let soil_now: Vec<SoilEvidence> = latest.into_values().cloned().collect();
        let crops_now: Vec<CropEvidence> = crops
            .iter()
            .filter(|c| c.campaign == campaign)
            .cloned()
            .collect();
        let result = classify(
            rules,
            soil_tier(soil_now.iter().map(|s| s.level.as_str())),
            crop_state(crops_now.iter().map(|c| c.level)),
        );
        let changed = out.last().is_some_and(|prev| prev.result != result);
        out.push(CampaignResult {
            campaign: campaign.to_string(),
            result,
            changed,
            soil: soil_now,
            crops: crops_now,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn food() -> FoodStandard {
        FoodStandard::from_toml(include_str!("../../config/standards/gb2762-2022.toml"))
            .expect("shipped food limits are valid")
    }

    fn rules() -> CategoryRules {
        CategoryRules::from_toml(include_str!(
            "../../config/categories/farmland-guideline.toml"
        ))
        .expect("shipped category rules are valid")
    }

    #[test]
    fn crop_results_are_judged_against_their_category_limit() {
        let f = food();
        let rice = f.category("大米").expect("alias");
        assert_eq!(rice.id, "rice");
        assert_eq!(f.category("RICE").map(|c| c.id.as_str()), Some("rice"));
        assert!(f.category("banana").is_none());
        // Rice Cd 0.2: equality never exceeds; 0.3 exceeds; 0.41 is over twice the limit.
        assert_eq!(
            rice.judge(Metal::Cd, 0.2, true, 2.0),
            CropLevel::WithinLimit
        );
        assert_eq!(rice.judge(Metal::Cd, 0.3, true, 2.0), CropLevel::Exceeding);
        assert_eq!(rice.judge(Metal::Cd, 0.4, true, 2.0), CropLevel::Exceeding);
        assert_eq!(
            rice.judge(Metal::Cd, 0.41, true, 2.0),
            CropLevel::SeverelyExceeding
        );
        // A non-detect: MDL within the limit passes, above it cannot be judged.
        assert_eq!(
            rice.judge(Metal::Cd, 0.01, false, 2.0),
            CropLevel::WithinLimit
        );
        assert_eq!(
            rice.judge(Metal::Cd, 0.5, false, 2.0),
            CropLevel::Undeterminable
        );
        // No Zn limit.
        assert_eq!(rice.judge(Metal::Zn, 50.0, true, 2.0), CropLevel::NoLimit);
        let leafy = f.category("leafy_vegetable").expect("leafy");
        assert_eq!(
            leafy.judge(Metal::Pb, 0.31, true, 2.0),
            CropLevel::Exceeding
        );
        assert_eq!(
            f.category("wheat")
                .and_then(|c| c.limit(Metal::Cd))
                .map(|l| l.mgkg),
            Some(0.1)
        );
    }

    #[test]
    fn bad_food_and_rule_files_are_refused() {
        let text = include_str!("../../config/standards/gb2762-2022.toml");
        let code = |r: Result<FoodStandard, CropError>| r.err().map(|e| e.to_string());
        let neg = text.replacen("mgkg = 0.2,", "mgkg = -0.2,", 1);
        assert!(code(FoodStandard::from_toml(&neg)).is_some_and(|e| e.starts_with("bad_limit")));
        let fe = text.replacen("metal = \"Pb\"", "metal = \"Fe\"", 1);
        assert!(code(FoodStandard::from_toml(&fe)).is_some_and(|e| e.starts_with("bad_limit")));
        let dup = text.replacen("\"wheat\", \"小麦\"", "\"wheat\", \"大米\"", 1);
        assert!(code(FoodStandard::from_toml(&dup))
            .is_some_and(|e| e.starts_with("duplicate_category")));
        assert!(FoodStandard::is_food_standard(text));
        assert!(!FoodStandard::is_food_standard(include_str!(
            "../../config/standards/gb15618-2018.toml"
        )));

        let r = include_str!("../../config/categories/farmland-guideline.toml");
        let err = |t: &str| CategoryRules::from_toml(t).err().map(|e| e.to_string());
        // Drop the last rule: incomplete.
        let cut = r.rfind("[[rule]]").map(|i| &r[..i]).unwrap_or(r);
        assert!(
            err(cut).is_some_and(|e| e.starts_with("incomplete_rules")),
            "{:?}",
            err(cut)
        );
        let twice = r.replacen("crop = \"exceeding\"", "crop = \"none_exceeding\"", 1);
        assert!(err(&twice).is_some_and(|e| e.contains("given twice")));
        let odd = r.replacen(
            "category = \"strict_control\"",
            "category = \"forbidden\"",
            1,
        );
        assert!(err(&odd).is_some_and(|e| e.contains("unknown category")));
    }

    /// Every branch of the table, and the soil-only and undetermined cases.
    #[test]
    fn every_rule_branch_classifies_as_worked_by_hand() {
        use CropState::*;
        use SoilTier::*;
        let r = rules();
        let cases = [
            (PriorityProtection, NoneExceeding, PriorityProtection),
            (PriorityProtection, Exceeding, SafeUtilisation),
            (PriorityProtection, SeverelyExceeding, SafeUtilisation),
            (SafeUtilisation, NoneExceeding, SafeUtilisation),
            (SafeUtilisation, Exceeding, SafeUtilisation),
            (SafeUtilisation, SeverelyExceeding, StrictControl),
            (StrictControl, NoneExceeding, StrictControl),
            (StrictControl, Exceeding, StrictControl),
            (StrictControl, SeverelyExceeding, StrictControl),
        ];
        for (soil, crop, want) in cases {
            assert_eq!(
                classify(&r, Some(soil), Some(crop)),
                Classified::Category {
                    category: want,
                    soil,
                    crop
                },
                "{soil:?} x {crop:?}"
            );
        }
        // Soil only: the soil tier, never a category.
        assert_eq!(
            classify(&r, Some(SafeUtilisation), None),
            Classified::SoilTierOnly {
                soil: SafeUtilisation
            }
        );
        assert_eq!(
            classify(&r, None, Some(Exceeding)),
            Classified::Undetermined
        );
    }

    #[test]
    fn tiers_and_states_take_the_worst_and_skip_what_cannot_decide() {
        assert_eq!(
            soil_tier(["none", "screening", "none"]),
            Some(SoilTier::SafeUtilisation)
        );
        assert_eq!(
            soil_tier(["none", "intervention"]),
            Some(SoilTier::StrictControl)
        );
        assert_eq!(soil_tier(["undeterminable", "no_standard"]), None);
        assert_eq!(soil_tier(["none", "undeterminable"]), None, "not a pass");
        assert_eq!(
            soil_tier(["screening", "undeterminable"]),
            Some(SoilTier::SafeUtilisation)
        );
        assert_eq!(soil_tier(["none"]), Some(SoilTier::PriorityProtection));
        assert_eq!(
            crop_state([CropLevel::WithinLimit, CropLevel::Exceeding]),
            Some(CropState::Exceeding)
        );
        assert_eq!(
            crop_state([CropLevel::NoLimit, CropLevel::Undeterminable]),
            None
        );
        assert_eq!(
            crop_state([CropLevel::SeverelyExceeding, CropLevel::WithinLimit]),
            Some(CropState::SeverelyExceeding)
        );
    }
    #[test]
    fn history_carries_soil_forward_and_marks_changes() {
        let t = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        let soil = |campaign: &str, metal, level: &str, at: &str| SoilEvidence {
            campaign: campaign.into(),
            metal,
            level: level.into(),
            value_mgkg: 0.5,
            sampled_at: t(at),
            source: "lab".into(),
            source_id: "B".into(),
            msg_id: "S".into(),
        };
        let crop = |campaign: &str, level| CropEvidence {
            campaign: campaign.into(),
            food_category: "rice".into(),
            metal: Metal::Cd,
            value_mgkg: 0.3,
            limit_mgkg: Some(0.2),
            level,
            sampled_at: t("2026-10-01T00:00:00Z"),
            batch_id: "C".into(),
            sample_id: "R1".into(),
        };
        let soils = vec![
            soil("2024", Metal::Cd, "none", "2024-05-01T00:00:00Z"),
            soil("2024", Metal::Pb, "none", "2024-05-01T00:00:00Z"),
            soil("2026", Metal::Cd, "screening", "2026-05-01T00:00:00Z"),
        ];
        let crops = vec![
            crop("2025", CropLevel::WithinLimit),
            crop("2026", CropLevel::WithinLimit),
        ];
        let h = history(&rules(), &soils, &crops);
        let got: Vec<(&str, Classified, bool)> = h
            .iter()
            .map(|c| (c.campaign.as_str(), c.result, c.changed))
            .collect();
        use CropState::*;
        use SoilTier::*;
        assert_eq!(
            got,
            [
                // 2024: soil only.
                (
                    "2024",
                    Classified::SoilTierOnly {
                        soil: PriorityProtection
                    },
                    false
                ),
                // 2025: 2024's soil carried forward, rice within its limit.
                (
                    "2025",
                    Classified::Category {
                        category: PriorityProtection,
                        soil: PriorityProtection,
                        crop: NoneExceeding
                    },
                    true
                ),
                // 2026: the new Cd sample is above screening.
                (
                    "2026",
                    Classified::Category {
                        category: SafeUtilisation,
                        soil: SafeUtilisation,
                        crop: NoneExceeding
                    },
                    true
                ),
            ]
        );
        assert_eq!(h[2].soil.len(), 2, "Cd of 2026 and Pb of 2024");
        assert_eq!(h[2].crops.len(), 1);
    }
}
