//! Batch QC (HJ/T 166-2004 style; figures from `[lab]` configuration):
//!
//! - duplicates (field + lab) and blanks present at the configured rates;
//! - each duplicate's relative deviation RD = |a − b| / (a + b) within the limit of its
//!   concentration band (pairs with a non-detect are not compared);
//! - each blank below its MDL;
//! - each CRM result within its certified range (`qc_ref` = `NAME:certified:low:high`, mg/kg);
//!   outside, the batch is invalid;
//! - each spike's recovery (spiked − sample) / added within the window
//!   (`qc_ref` = `SAMPLE_ID:added_mgkg`).

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{CheckCode, Issue, LabRow, QcType};
use crate::config::LabConfig;
use crate::domain::metal::Metal;

/// Counts of one QC kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QcCount {
    /// How many are required (rates); 0 where no rate applies.
    pub required: usize,
    /// How many (distinct QC sample ids) the batch has.
    pub present: usize,
    /// Rows checked.
    pub checked: usize,
    /// Rows that failed their check.
    pub failed: usize,
}

/// QC results of a batch, for the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QcSummary {
    /// Distinct field samples.
    pub samples: usize,
    /// Field and lab duplicates.
    pub duplicates: QcCount,
    /// Blanks.
    pub blanks: QcCount,
    /// Certified reference materials.
    pub crm: QcCount,
    /// Matrix spikes.
    pub spikes: QcCount,
}

/// A CRM reference: name, certified value and acceptable range, mg/kg.
#[derive(Debug, Clone, PartialEq)]
pub struct CrmRef {
    /// Material name, e.g. `GBW07405`.
    pub name: String,
    /// Certified value.
    pub certified: f64,
    /// Lowest acceptable result.
    pub low: f64,
    /// Highest acceptable result.
    pub high: f64,
}

/// Parses `NAME:certified:low:high`.
pub fn parse_crm_ref(text: &str) -> Option<CrmRef> {
    let parts: Vec<&str> = text.split(':').map(str::trim).collect();
    let [name, c, l, h] = parts.as_slice() else {
        return None;
    };
    let num = |t: &str| t.parse::<f64>().ok().filter(|v| v.is_finite());
    let (certified, low, high) = (num(c)?, num(l)?, num(h)?);
    (!name.is_empty() && low <= certified && certified <= high).then(|| CrmRef {
        name: name.to_string(),
        certified,
        low,
        high,
    })
}

/// Parses a spike reference `SAMPLE_ID:added_mgkg`.
pub fn parse_spike_ref(text: &str) -> Option<(&str, f64)> {
    let (id, added) = text.rsplit_once(':')?;
    let added = added
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|a| *a > 0.0 && a.is_finite())?;
    (!id.trim().is_empty()).then_some((id.trim(), added))
}

/// Runs the QC rules over checked rows: the batch's rates first, then each QC row in line
/// order.
pub fn check(rows: &[LabRow], cfg: &LabConfig) -> (QcSummary, Vec<Issue>) {
    let mut s = counts(rows, cfg);
    let mut issues = rate_issues(&s, cfg);
    let samples: Samples<'_> = rows
        .iter()
        .filter(|r| r.qc_type == QcType::Sample)
        .map(|r| ((&*r.sample_id, r.metal), r))
        .collect();
    for r in rows {
        let issue = match r.qc_type {
            QcType::Sample => None,
            QcType::FieldDuplicate | QcType::LabDuplicate => {
                check_duplicate(r, &samples, &mut s.duplicates, cfg)
            }
            QcType::Blank => check_blank(r, &mut s.blanks),
            QcType::Crm => check_crm(r, &mut s.crm),
            QcType::Spike => check_spike(r, &samples, &mut s.spikes, cfg),
        };
        issues.extend(issue);
    }
    (s, issues)
}

/// The field samples of a batch, by sample id and metal.
type Samples<'a> = HashMap<(&'a str, Metal), &'a LabRow>;

/// The summary's counts of distinct samples per QC kind and the required duplicates and
/// blanks (nothing checked yet).
fn counts(rows: &[LabRow], cfg: &LabConfig) -> QcSummary {
    let ids = |t: &[QcType]| -> usize {
        rows.iter()
            .filter(|r| t.contains(&r.qc_type))
            .map(|r| &*r.sample_id)
            .collect::<BTreeSet<_>>()
            .len()
    };
    let present = |t: &[QcType]| QcCount {
        present: ids(t),
        ..QcCount::default()
    };
    let mut s = QcSummary {
        samples: ids(&[QcType::Sample]),
        duplicates: present(&[QcType::FieldDuplicate, QcType::LabDuplicate]),
        blanks: present(&[QcType::Blank]),
        crm: present(&[QcType::Crm]),
        spikes: present(&[QcType::Spike]),
    };
    if s.samples > 0 {
        // The small tolerance keeps 80000 × 0.05 at 4000 despite binary fractions.
        let need = |rate: f64, min: usize| {
            ((s.samples as f64 * rate - 1e-9).ceil().max(0.0) as usize).max(min)
        };
        s.duplicates.required = need(cfg.duplicate_rate, cfg.min_duplicates);
        s.blanks.required = need(cfg.blank_rate, cfg.min_blanks);
    }
    s
}

/// Too few duplicates or blanks for the batch's samples.
fn rate_issues(s: &QcSummary, cfg: &LabConfig) -> Vec<Issue> {
    let mut issues = Vec::new();
    if s.duplicates.present < s.duplicates.required {
        issues.push(Issue::batch(
            CheckCode::QcDuplicateRate,
            format!(
                "{} duplicates for {} samples; at least {} required (rate {}, minimum {})",
                s.duplicates.present,
                s.samples,
                s.duplicates.required,
                cfg.duplicate_rate,
                cfg.min_duplicates
            ),
        ));
    }
    if s.blanks.present < s.blanks.required {
        issues.push(Issue::batch(
            CheckCode::QcBlankRate,
            format!(
                "{} blanks for {} samples; at least {} required (rate {}, minimum {})",
                s.blanks.present, s.samples, s.blanks.required, cfg.blank_rate, cfg.min_blanks
            ),
        ));
    }
    issues
}

/// A failed QC check of a row's value.
fn failed(r: &LabRow, code: CheckCode, detail: String) -> Issue {
    Issue::row(code, r.line, "value", detail)
}

/// A field or lab duplicate: its RD to its sample within the limit of their band (pairs with
/// a non-detect are not compared).
fn check_duplicate(
    r: &LabRow,
    samples: &Samples<'_>,
    count: &mut QcCount,
    cfg: &LabConfig,
) -> Option<Issue> {
    let qc_ref = r.qc_ref.as_deref().unwrap_or("");
    let Some(orig) = samples.get(&(qc_ref, r.metal)) else {
        return Some(orphan(r, "no sample row with this sample_id and metal"));
    };
    if !(r.detected && orig.detected) {
        return None;
    }
    count.checked += 1;
    let (a, b) = (orig.value_mgkg, r.value_mgkg);
    let rd = if a + b > 0.0 {
        (a - b).abs() / (a + b) * 100.0
    } else {
        0.0
    };
    let limit = cfg.duplicate_limit((a + b) / 2.0);
    if rd > limit {
        count.failed += 1;
        return Some(failed(
            r,
            CheckCode::QcDuplicateDeviation,
            format!(
                "{} {b} vs sample {qc_ref} {a} mg/kg: RD {rd:.1} % above the {limit} % limit",
                r.metal
            ),
        ));
    }
    None
}

/// A blank: below its MDL (or not detected).
fn check_blank(r: &LabRow, count: &mut QcCount) -> Option<Issue> {
    count.checked += 1;
    let mdl = r.mdl_mgkg.unwrap_or(0.0);
    if !(r.detected && r.value_mgkg >= mdl) {
        return None;
    }
    count.failed += 1;
    Some(failed(
        r,
        CheckCode::QcBlankAboveMdl,
        format!(
            "blank {} {} mg/kg is not below its MDL {mdl} mg/kg",
            r.metal, r.value_mgkg
        ),
    ))
}

/// A certified reference material: within its certified range.
fn check_crm(r: &LabRow, count: &mut QcCount) -> Option<Issue> {
    let Some(crm) = parse_crm_ref(r.qc_ref.as_deref().unwrap_or("")) else {
        return Some(orphan(
            r,
            "a CRM needs qc_ref NAME:certified:low:high (mg/kg)",
        ));
    };
    count.checked += 1;
    if (crm.low..=crm.high).contains(&r.value_mgkg) {
        return None;
    }
    count.failed += 1;
    Some(failed(
        r,
        CheckCode::QcCrmOutOfRange,
        format!(
            "CRM {} {} {} mg/kg outside its certified range {}-{} (certified {}): the batch is invalid",
            crm.name, r.metal, r.value_mgkg, crm.low, crm.high, crm.certified
        ),
    ))
}

/// A matrix spike: its recovery over its sample within the window.
fn check_spike(
    r: &LabRow,
    samples: &Samples<'_>,
    count: &mut QcCount,
    cfg: &LabConfig,
) -> Option<Issue> {
    let Some((id, added)) = parse_spike_ref(r.qc_ref.as_deref().unwrap_or("")) else {
        return Some(orphan(r, "a spike needs qc_ref SAMPLE_ID:added_mgkg"));
    };
    let Some(orig) = samples.get(&(id, r.metal)) else {
        return Some(orphan(r, "no sample row with this sample_id and metal"));
    };
    count.checked += 1;
    let base = if orig.detected { orig.value_mgkg } else { 0.0 };
    let recovery = (r.value_mgkg - base) / added * 100.0;
    if (cfg.spike_recovery_min_pct..=cfg.spike_recovery_max_pct).contains(&recovery) {
        return None;
    }
    count.failed += 1;
    Some(failed(
        r,
        CheckCode::QcSpikeRecovery,
        format!(
            "spike recovery {recovery:.1} % outside {}-{} %",
            cfg.spike_recovery_min_pct, cfg.spike_recovery_max_pct
        ),
    ))
}

fn orphan(r: &LabRow, why: &str) -> Issue {
    Issue::row(
        CheckCode::OrphanQcRef,
        r.line,
        "qc_ref",
        format!("{:?}: {why}", r.qc_ref.as_deref().unwrap_or("")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::checks::tests::{configs, registry, HEADER};
    use crate::lab::checks::{CheckContext, RowChecker};
    use crate::lab::csv::parse_csv;

    fn run(rows: &str) -> (QcSummary, Vec<(CheckCode, Option<u64>)>) {
        let (ingest, lab) = configs();
        let reg = registry();
        let ctx = CheckContext {
            registry: &reg,
            ingest: &ingest,
            lab: &lab,
            now: chrono::Utc::now(),
        };
        let mut checker = RowChecker::new(&ctx);
        parse_csv(format!("{HEADER}\n{rows}").as_bytes(), &mut |r| {
            checker.row(r)
        })
        .expect("parses");
        let (rows, issues) = checker.finish();
        assert_eq!(issues, vec![]);
        let (s, issues) = check(&rows, &lab);
        (s, issues.iter().map(|i| (i.code, i.line)).collect())
    }

    const SAMPLE: &str = "B,L,S1,P1,2026-01-01,0,20,6.2,Pb,50,mg/kg,true,2,M,sample,";
    const DUP: &str = "B,L,S1-D,P1,2026-01-01,0,20,6.2,Pb,52,mg/kg,true,2,M,field_duplicate,S1";
    const BLANK: &str = "B,L,BL1,,,,,,Pb,0.5,mg/kg,true,2,M,blank,";
    const CRM: &str = "B,L,CRM1,,,,,,Pb,550,mg/kg,true,2,M,crm,GBW07405:552:523:581";
    const SPIKE: &str = "B,L,S1-SP,,,,,,Pb,145,mg/kg,true,2,M,spike,S1:100";

    #[test]
    fn a_clean_batch_passes_qc() {
        let (s, issues) = run(&[SAMPLE, DUP, BLANK, CRM, SPIKE].join("\n"));
        assert_eq!(issues, vec![]);
        assert_eq!(
            (s.samples, s.duplicates.required, s.blanks.required),
            (1, 1, 1)
        );
        assert_eq!(
            (s.duplicates.checked, s.crm.checked, s.spikes.checked),
            (1, 1, 1)
        );
    }

    #[test]
    fn each_qc_rule_has_its_code() {
        use CheckCode::*;
        let (_, i) = run(&[SAMPLE, BLANK].join("\n"));
        assert_eq!(i, vec![(QcDuplicateRate, None)]);
        let (_, i) = run(&[SAMPLE, DUP].join("\n"));
        assert_eq!(i, vec![(QcBlankRate, None)]);
        let far = DUP.replace(",52,", ",70,");
        let (_, i) = run(&[SAMPLE, &far, BLANK].join("\n"));
        assert_eq!(i, vec![(QcDuplicateDeviation, Some(3))]);
        let dirty = BLANK.replace(",0.5,", ",3,");
        let (_, i) = run(&[SAMPLE, DUP, &dirty].join("\n"));
        assert_eq!(i, vec![(QcBlankAboveMdl, Some(4))]);
        let crm = CRM.replace(",550,", ",600,");
        let (_, i) = run(&[SAMPLE, DUP, BLANK, &crm].join("\n"));
        assert_eq!(i, vec![(QcCrmOutOfRange, Some(5))]);
        let spike = SPIKE.replace(",145,", ",200,");
        let (_, i) = run(&[SAMPLE, DUP, BLANK, &spike].join("\n"));
        assert_eq!(i, vec![(QcSpikeRecovery, Some(5))]);
        let orphan = DUP.replace("duplicate,S1", "duplicate,S9");
        let (_, i) = run(&[SAMPLE, &orphan, BLANK].join("\n"));
        assert_eq!(i, vec![(OrphanQcRef, Some(3))]);
    }

    #[test]
    fn duplicate_limits_follow_concentration() {
        let (_, lab) = configs();
        assert_eq!(lab.duplicate_limit(500.0), 5.0);
        assert_eq!(lab.duplicate_limit(100.0), 10.0);
        assert_eq!(lab.duplicate_limit(5.0), 20.0);
        assert_eq!(lab.duplicate_limit(0.5), 25.0);
        assert_eq!(lab.duplicate_limit(0.05), 30.0);
    }
}
