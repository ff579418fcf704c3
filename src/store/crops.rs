//! Soil–crop co-monitoring in the database: the crop samples of an accepted lab batch
//! judged into `crop_results` (in the batch's transaction), and the farmland categories per
//! point and campaign computed from `readings_full` and `crop_results`.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::{Client, Transaction};
use serde::Serialize;

use super::StoreError;
use crate::config::CropRules;
use crate::domain::crop::{
    self, CampaignResult, Classified, CropEvidence, CropLevel, SoilEvidence,
};
use crate::domain::metal::Metal;
use crate::lab::{LabRow, QcType};

/// The campaign of a sample: its sampling year in UTC+8 (the network's local time).
pub fn campaign_of(sampled_at: DateTime<Utc>) -> String {
    (sampled_at + Duration::hours(8)).format("%Y").to_string()
}

/// Judges and inserts the crop field samples of an accepted batch; returns how many rows.
/// Rows were checked: a crop sample has a known matrix and a farmland point.
pub(crate) async fn insert(
    tx: &Transaction<'_>,
    rules: &CropRules,
    rows: &[LabRow],
    received_at: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut cols = CropColumns::default();
    for r in rows.iter().filter(|r| r.qc_type == QcType::Sample) {
        let (Some(matrix), Some(point), Some(at)) =
            (r.matrix.as_deref(), r.point_id.as_deref(), r.sampled_at)
        else {
            continue;
        };
        let Some(category) = rules.food.category(matrix) else {
            continue;
        };
        let limit = category.limit(r.metal);
        let level = category.judge(
            r.metal,
            r.judged_value_mgkg(),
            r.detected,
            rules.categories.severe_factor,
        );
        cols.push(
            r,
            point,
            at,
            matrix,
            &category.id,
            limit.map(|l| (l.mgkg, l.source.as_str())),
            level,
        );
    }
    if cols.sample_id.is_empty() {
        return Ok(0);
    }
    let n = cols.sample_id.len();
    tx.execute(
        "INSERT INTO crop_results (batch_id, sample_id, metal, point_id, campaign, sampled_at,
             matrix, food_category, value_mgkg, detected, limit_mgkg, level, standard_id,
             standard_version, limit_source, received_at)
         SELECT u.b, u.s, u.m, u.p, u.c, u.t, u.x, u.f, u.v, u.d, u.l, u.lv, $13, $14, u.src, $15
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::timestamptz[], $7::text[], $8::text[], $9::float8[], $10::bool[],
                     $11::float8[], $12::text[], $16::text[])
              AS u(b, s, m, p, c, t, x, f, v, d, l, lv, src)",
        &[
            &cols.batch_id,
            &cols.sample_id,
            &cols.metal,
            &cols.point_id,
            &cols.campaign,
            &cols.sampled_at,
            &cols.matrix,
            &cols.category,
            &cols.value,
            &cols.detected,
            &cols.limit,
            &cols.level,
            &rules.food.id,
            &rules.food.version,
            &received_at,
            &cols.source,
        ],
    )
    .await?;
    Ok(n)
}

/// Column arrays of the crop insert.
#[derive(Default)]
struct CropColumns {
    batch_id: Vec<String>,
    sample_id: Vec<String>,
    metal: Vec<&'static str>,
    point_id: Vec<String>,
    campaign: Vec<String>,
    sampled_at: Vec<DateTime<Utc>>,
    matrix: Vec<String>,
    category: Vec<String>,
    value: Vec<f64>,
    detected: Vec<bool>,
    limit: Vec<Option<f64>>,
    level: Vec<&'static str>,
    source: Vec<Option<String>>,
}

impl CropColumns {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        r: &LabRow,
        point: &str,
        at: DateTime<Utc>,
        matrix: &str,
        category: &str,
        limit: Option<(f64, &str)>,
        level: CropLevel,
    ) {
        self.batch_id.push(r.batch_id.to_string());
        self.sample_id.push(r.sample_id.to_string());
        self.metal.push(r.metal.symbol());
        self.point_id.push(point.to_string());
        self.campaign.push(campaign_of(at));
        self.sampled_at.push(at);
        self.matrix.push(matrix.to_string());
        self.category.push(category.to_string());
        self.value.push(r.judged_value_mgkg());
        self.detected.push(r.detected);
        self.limit.push(limit.map(|l| l.0));
        self.level.push(level.as_str());
        self.source.push(limit.map(|l| l.1.to_string()));
    }
}

/// One farmland point's categories: the latest campaign's outcome and the history.
#[derive(Debug, Clone, Serialize)]
pub struct PointCategory {
    /// Point id.
    pub point_id: String,
    /// Point name.
    pub name: String,
    /// County code.
    pub county_code: String,
    /// Land use.
    pub land_use: String,
    /// The latest campaign's outcome (`None`: no soil or crop sample yet).
    pub current: Option<CampaignResult>,
    /// Every campaign, oldest first.
    pub history: Vec<CampaignResult>,
}

/// Per county: how many farmland points fall in each category or soil tier.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CountyCounts {
    /// County code.
    pub county_code: String,
    /// Farmland points.
    pub points: u32,
    /// Counts by outcome key: `priority_protection`, `safe_utilisation`, `strict_control`
    /// (legal categories, soil and crop data), `soil_tier_only:<tier>` (no crop data),
    /// `undetermined`, `no_data`.
    pub counts: std::collections::BTreeMap<String, u32>,
}

/// The categories report.
#[derive(Debug, Clone, Serialize)]
pub struct Categories {
    /// When it was computed.
    pub as_of: DateTime<Utc>,
    /// Category rules id and version; food standard.
    pub rules: String,
    /// Food standard id and version.
    pub food_standard: String,
    /// A reminder printed with every output.
    pub note: &'static str,
    /// Per county.
    pub counties: Vec<CountyCounts>,
    /// Per point.
    pub points: Vec<PointCategory>,
}

/// What the report says about a soil-only point.
pub const SOIL_ONLY_NOTE: &str = "a point without crop results shows its soil screening tier only (soil_tier_only), never a legal category";

/// The key a point is counted under.
pub fn outcome_key(current: Option<&CampaignResult>) -> String {
    match current.map(|c| c.result) {
        None => "no_data".into(),
        Some(Classified::Category { category, .. }) => category.as_str().into(),
        Some(Classified::SoilTierOnly { soil }) => format!("soil_tier_only:{}", soil.as_str()),
        Some(Classified::Undetermined) => "undetermined".into(),
    }
}

/// Computes the categories of the farmland points of `counties`.
pub async fn categories(
    client: &Client,
    rules: &CropRules,
    counties: &[String],
) -> Result<Categories, StoreError> {
    let mut points = super::network::points(client).await?;
    points.retain(|p| p.point.land_use.is_farmland() && counties.contains(&p.point.county_code));
    let ids: Vec<&str> = points.iter().map(|p| p.point.id.as_str()).collect();
    let soil = soil_evidence(client, &ids).await?;
    let crops = crop_evidence(client, &ids).await?;
    let none_s = Vec::new();
    let none_c = Vec::new();
    let mut out = Vec::new();
    let mut per_county: HashMap<String, CountyCounts> = HashMap::new();
    for p in points {
        let history = crop::history(
            &rules.categories,
            soil.get(&p.point.id).unwrap_or(&none_s),
            crops.get(&p.point.id).unwrap_or(&none_c),
        );
        let current = history.last().cloned();
        let c = per_county
            .entry(p.point.county_code.clone())
            .or_insert_with(|| CountyCounts {
                county_code: p.point.county_code.clone(),
                ..CountyCounts::default()
            });
        c.points += 1;
        *c.counts.entry(outcome_key(current.as_ref())).or_default() += 1;
        out.push(PointCategory {
            point_id: p.point.id,
            name: p.point.name,
            county_code: p.point.county_code,
            land_use: p.point.land_use.as_str().to_string(),
            current,
            history,
        });
    }
    let mut counties_out: Vec<CountyCounts> = per_county.into_values().collect();
    counties_out.sort_by(|a, b| a.county_code.cmp(&b.county_code));
    Ok(Categories {
        as_of: Utc::now(),
        rules: format!("{} {}", rules.categories.id, rules.categories.version),
        food_standard: format!("{} ({})", rules.food.id, rules.food.version),
        note: SOIL_ONLY_NOTE,
        counties: counties_out,
        points: out,
    })
}

/// The soil reading that stands for each (point, campaign, metal), farmland metals only (no
/// Cr6), read through `readings_full`: the latest lab result of the campaign where one
/// exists (lab ICP-MS/AFS is the authoritative method: a newer field XRF screening of the
/// same campaign does not override it), else the latest reading.
async fn soil_evidence(
    client: &Client,
    ids: &[&str],
) -> Result<HashMap<String, Vec<SoilEvidence>>, StoreError> {
    let rows = client
        .query(
            "SELECT DISTINCT ON (point_id, y, metal) point_id,
                    to_char(sampled_at AT TIME ZONE 'Asia/Shanghai', 'YYYY') AS y,
                    metal, level, value_mgkg, sampled_at, source, source_id, msg_id
             FROM readings_full
             WHERE point_id = ANY($1) AND metal <> 'Cr6'
             ORDER BY point_id, y, metal, (source = 'lab') DESC, sampled_at DESC",
            &[&ids],
        )
        .await?;
    let mut out: HashMap<String, Vec<SoilEvidence>> = HashMap::new();
    for r in rows {
        let Some(metal) = Metal::parse(r.get(2)) else {
            continue;
        };
        out.entry(r.get(0)).or_default().push(SoilEvidence {
            campaign: r.get(1),
            metal,
            level: r.get(3),
            value_mgkg: r.get(4),
            sampled_at: r.get(5),
            source: r.get(6),
            source_id: r.get(7),
            msg_id: r.get(8),
        });
    }
    Ok(out)
}

/// Every crop result of the points.
async fn crop_evidence(
    client: &Client,
    ids: &[&str],
) -> Result<HashMap<String, Vec<CropEvidence>>, StoreError> {
    let rows = client
        .query(
            "SELECT point_id, campaign, food_category, metal, value_mgkg, limit_mgkg, level,
                    sampled_at, batch_id, sample_id
             FROM crop_results WHERE point_id = ANY($1)
             ORDER BY point_id, sampled_at, sample_id, metal",
            &[&ids],
        )
        .await?;
    let mut out: HashMap<String, Vec<CropEvidence>> = HashMap::new();
    for r in rows {
        let (Some(metal), Some(level)) = (Metal::parse(r.get(3)), CropLevel::parse(r.get(6)))
        else {
            continue;
        };
        out.entry(r.get(0)).or_default().push(CropEvidence {
            campaign: r.get(1),
            food_category: r.get(2),
            metal,
            value_mgkg: r.get(4),
            limit_mgkg: r.get(5),
            level,
            sampled_at: r.get(7),
            batch_id: r.get(8),
            sample_id: r.get(9),
        });
    }
    Ok(out)
}

/// The columns of [`rows`] (and of the CSV and xlsx exports).
pub const EXPORT_HEADER: &[&str] = &[
    "county_code",
    "point_id",
    "land_use",
    "campaign",
    "outcome",
    "soil_tier",
    "crop_state",
    "changed",
    "soil_evidence",
    "crop_evidence",
];

/// The report as a table: one row per point and campaign, in [`EXPORT_HEADER`] order, the
/// evidence as `;`-separated text.
pub fn rows(report: &Categories) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for p in &report.points {
        for c in &p.history {
            let (soil, crop) = match c.result {
                Classified::Category { soil, crop, .. } => (soil.as_str(), crop.as_str()),
                Classified::SoilTierOnly { soil } => (soil.as_str(), ""),
                Classified::Undetermined => ("", ""),
            };
            let soil_ev: Vec<String> = c
                .soil
                .iter()
                .map(|s| {
                    format!(
                        "{} {} {} ({} {})",
                        s.metal, s.value_mgkg, s.level, s.source, s.source_id
                    )
                })
                .collect();
            let crop_ev: Vec<String> = c
                .crops
                .iter()
                .map(|x| {
                    format!(
                        "{} {} {} {} ({} {})",
                        x.food_category,
                        x.metal,
                        x.value_mgkg,
                        x.level.as_str(),
                        x.batch_id,
                        x.sample_id
                    )
                })
                .collect();
            out.push(vec![
                p.county_code.clone(),
                p.point_id.clone(),
                p.land_use.clone(),
                c.campaign.clone(),
                outcome_key(Some(c)),
                soil.to_string(),
                crop.to_string(),
                c.changed.to_string(),
                soil_ev.join("; "),
                crop_ev.join("; "),
            ]);
        }
    }
    out
}

/// The report as CSV lines: one per point and campaign (header first).
pub fn to_csv(report: &Categories) -> Vec<String> {
    let mut lines = vec![EXPORT_HEADER.join(",")];
    for r in rows(report) {
        lines.push(format!("{},\"{}\",\"{}\"", r[..8].join(","), r[8], r[9]));
    }
    lines
}
