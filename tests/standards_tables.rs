//! The GB 15618-2018 (farmland) and GB 36600-2018 (development land) threshold tables, checked
//! cell by cell against an independent transcription of the team's domain reference
//! (`shared/reference/domain.md`).
//!
//! The const tables below ARE the specification: they were typed from domain.md, not read back
//! from `config/standards/`. The shipped files are loaded through the public API
//! (`soilmon::config::load_standards`) and every metal × pH band × land use is compared with the
//! transcription and judged at, just below and just above each threshold. The validation tests
//! break the shipped farmland file by string edits and expect `Standard::from_toml` to refuse it.
//!
//! Pure: no database, no broker. Most tests collect every failing cell before failing, so one
//! run names all the wrong cells.

use std::fmt::Debug;
use std::path::Path;

use soilmon::config::load_standards;
use soilmon::domain::judge::{judge, Level};
use soilmon::domain::metal::Metal;
use soilmon::domain::point::LandUse;
use soilmon::domain::standard::{RotationRule, Standard, StandardError, Standards, Thresholds};

const STANDARDS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/standards");
const FARMLAND_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/config/standards/gb15618-2018.toml"
);
const DEVELOPMENT_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/config/standards/gb36600-2018.toml"
);

// ------------------------------------------------------------------------------------------
// Transcription of domain.md (the specification of this test).
// ------------------------------------------------------------------------------------------

const FARMLAND_ID: &str = "GB 15618-2018";
const DEVELOPMENT_ID: &str = "GB 36600-2018";
const STANDARD_VERSION: &str = "2018";

/// GB 15618 pH bands: `pH ≤ 5.5`, `5.5 < pH ≤ 6.5`, `6.5 < pH ≤ 7.5`, `pH > 7.5`.
const PH_UPPER_BOUNDS: [f64; 3] = [5.5, 6.5, 7.5];

/// pH values that must fall in each band: every inclusive upper bound lands in its own band,
/// and a hair above a bound lands in the next one.
const BAND_PHS: [&[f64]; 4] = [
    &[3.0, 4.5, 5.4999, 5.5],
    &[5.50001, 6.0, 6.5],
    &[6.50001, 7.0, 7.5],
    &[7.50001, 8.0, 9.5],
];

/// Land-use columns of GB 15618 Table 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Paddy,
    Other,
    Orchard,
    All,
}

/// GB 15618 Table 1, risk screening values (mg/kg), one value per pH band.
const FARMLAND_SCREENING: [(Metal, Col, [f64; 4]); 14] = [
    (Metal::Cd, Col::Paddy, [0.3, 0.4, 0.6, 0.8]),
    (Metal::Cd, Col::Other, [0.3, 0.3, 0.3, 0.6]),
    (Metal::Hg, Col::Paddy, [0.5, 0.5, 0.6, 1.0]),
    (Metal::Hg, Col::Other, [1.3, 1.8, 2.4, 3.4]),
    (Metal::As, Col::Paddy, [30.0, 30.0, 25.0, 20.0]),
    (Metal::As, Col::Other, [40.0, 40.0, 30.0, 25.0]),
    (Metal::Pb, Col::Paddy, [80.0, 100.0, 140.0, 240.0]),
    (Metal::Pb, Col::Other, [70.0, 90.0, 120.0, 170.0]),
    (Metal::Cr, Col::Paddy, [250.0, 250.0, 300.0, 350.0]),
    (Metal::Cr, Col::Other, [150.0, 150.0, 200.0, 250.0]),
    (Metal::Cu, Col::Orchard, [150.0, 150.0, 200.0, 200.0]),
    (Metal::Cu, Col::Other, [50.0, 50.0, 100.0, 100.0]),
    (Metal::Ni, Col::All, [60.0, 70.0, 100.0, 190.0]),
    (Metal::Zn, Col::All, [200.0, 200.0, 250.0, 300.0]),
];

/// GB 15618 Table 3, risk intervention values (mg/kg): only these five metals, no land-use split.
const FARMLAND_INTERVENTION: [(Metal, [f64; 4]); 5] = [
    (Metal::Cd, [1.5, 2.0, 3.0, 4.0]),
    (Metal::Hg, [2.0, 2.5, 4.0, 6.0]),
    (Metal::As, [200.0, 150.0, 120.0, 100.0]),
    (Metal::Pb, [400.0, 500.0, 700.0, 1000.0]),
    (Metal::Cr, [800.0, 850.0, 1000.0, 1300.0]),
];

/// Paddy–upland rotation land: per metal and band the lower of the paddy-land and other-land
/// screening values, worked out by hand (checked against the two columns in
/// `rotation_table_is_the_cellwise_minimum_of_paddy_and_other`).
const ROTATION_SCREENING: [(Metal, [f64; 4]); 8] = [
    (Metal::Cd, [0.3, 0.3, 0.3, 0.6]), // band 2 and 3: other (0.3) < paddy (0.4, 0.6)
    (Metal::Hg, [0.5, 0.5, 0.6, 1.0]), // paddy
    (Metal::As, [30.0, 30.0, 25.0, 20.0]), // paddy
    (Metal::Pb, [70.0, 90.0, 120.0, 170.0]), // other, every band
    (Metal::Cr, [150.0, 150.0, 200.0, 250.0]), // other
    (Metal::Cu, [50.0, 50.0, 100.0, 100.0]), // paddy land uses "other" for Cu
    (Metal::Ni, [60.0, 70.0, 100.0, 190.0]), // no split
    (Metal::Zn, [200.0, 200.0, 250.0, 300.0]), // no split
];

/// GB 36600 Table 1 (mg/kg): (metal, [screening 1st, 2nd], [intervention 1st, 2nd]).
/// Zn and total Cr are absent: no applicable standard.
const DEVELOPMENT: [(Metal, [f64; 2], [f64; 2]); 7] = [
    (Metal::As, [20.0, 60.0], [120.0, 140.0]),
    (Metal::Cd, [20.0, 65.0], [47.0, 172.0]),
    (Metal::Cr6, [3.0, 5.7], [30.0, 78.0]),
    (Metal::Cu, [2000.0, 18000.0], [8000.0, 36000.0]),
    (Metal::Pb, [400.0, 800.0], [800.0, 2500.0]),
    (Metal::Hg, [8.0, 38.0], [33.0, 82.0]),
    (Metal::Ni, [150.0, 900.0], [600.0, 2000.0]),
];

/// Typical method detection limits from domain.md (mg/kg): (method, metal, MDL).
const TYPICAL_MDLS: [(&str, Metal, f64); 14] = [
    ("FAAS", Metal::Cu, 1.0),
    ("FAAS", Metal::Zn, 1.0),
    ("FAAS", Metal::Pb, 10.0),
    ("FAAS", Metal::Ni, 3.0),
    ("FAAS", Metal::Cr, 4.0),
    ("AFS", Metal::Hg, 0.002),
    ("AFS", Metal::As, 0.01),
    ("ICP-MS", Metal::Cd, 0.07),
    ("ICP-MS", Metal::Pb, 2.0),
    ("ICP-MS", Metal::Cr, 2.0),
    ("ICP-MS", Metal::Ni, 2.0),
    ("ICP-MS", Metal::Cu, 0.5),
    ("ICP-MS", Metal::Zn, 7.0),
    ("ICP-MS", Metal::As, 0.6),
];

// ------------------------------------------------------------------------------------------
// Expected thresholds derived from the transcription by the rules of domain.md.
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct Expect {
    standard_id: &'static str,
    column: &'static str,
    screening: f64,
    intervention: Option<f64>,
}

const FARMLAND_USES: [LandUse; 8] = [
    LandUse::Paddy,
    LandUse::DryLand,
    LandUse::Irrigated,
    LandUse::Vegetable,
    LandUse::Orchard,
    LandUse::Tea,
    LandUse::Grassland,
    LandUse::PaddyUplandRotation,
];

fn screening_row(metal: Metal, col: Col) -> Option<[f64; 4]> {
    FARMLAND_SCREENING
        .iter()
        .find(|(m, c, _)| *m == metal && *c == col)
        .map(|r| r.2)
}

fn intervention_row(metal: Metal) -> Option<[f64; 4]> {
    FARMLAND_INTERVENTION
        .iter()
        .find(|(m, _)| *m == metal)
        .map(|r| r.1)
}

fn rotation_row(metal: Metal) -> Option<[f64; 4]> {
    ROTATION_SCREENING
        .iter()
        .find(|(m, _)| *m == metal)
        .map(|r| r.1)
}

/// The screening column a non-rotation farmland use reads for a metal, per domain.md: paddy
/// land reads "paddy"; orchards read "orchard" (Cu only); everything else, and paddy or orchard
/// land for a metal without its own column, reads "other"; "all" when the metal has no split.
fn farmland_column(land_use: LandUse, metal: Metal) -> Option<(&'static str, [f64; 4])> {
    if let Some(all) = screening_row(metal, Col::All) {
        return Some(("all", all));
    }
    let own = match land_use {
        LandUse::Paddy => screening_row(metal, Col::Paddy).map(|r| ("paddy", r)),
        LandUse::Orchard => screening_row(metal, Col::Orchard).map(|r| ("orchard", r)),
        _ => None,
    };
    own.or_else(|| screening_row(metal, Col::Other).map(|r| ("other", r)))
}

/// Expected thresholds for farmland in pH band `band` (`None`: no applicable standard).
fn farmland_expect(land_use: LandUse, metal: Metal, band: usize) -> Option<Expect> {
    let (column, screening) = if land_use == LandUse::PaddyUplandRotation {
        let values = rotation_row(metal)?;
        let column = if screening_row(metal, Col::All).is_some() {
            "all"
        } else if screening_row(metal, Col::Paddy).is_some() {
            "paddy+other"
        } else {
            "other"
        };
        (column, values[band])
    } else {
        let (column, values) = farmland_column(land_use, metal)?;
        (column, values[band])
    };
    Some(Expect {
        standard_id: FARMLAND_ID,
        column,
        screening,
        intervention: intervention_row(metal).map(|r| r[band]),
    })
}

/// Expected thresholds on development land (`None`: Zn, total Cr).
fn development_expect(land_use: LandUse, metal: Metal) -> Option<Expect> {
    let (class, column) = match land_use {
        LandUse::DevelopmentFirst => (0, "first"),
        LandUse::DevelopmentSecond => (1, "second"),
        other => panic!("{other} is not development land"),
    };
    DEVELOPMENT
        .iter()
        .find(|(m, _, _)| *m == metal)
        .map(|(_, s, i)| Expect {
            standard_id: DEVELOPMENT_ID,
            column,
            screening: s[class],
            intervention: Some(i[class]),
        })
}

/// The band used when no pH is known: lowest screening value; ties broken by the lower
/// intervention value, then by the more acid band.
fn strictest_band(land_use: LandUse, metal: Metal) -> Option<usize> {
    (0..4)
        .filter_map(|b| farmland_expect(land_use, metal, b).map(|e| (b, e)))
        .min_by(|(ba, a), (bb, b)| {
            a.screening
                .total_cmp(&b.screening)
                .then(
                    a.intervention
                        .unwrap_or(f64::INFINITY)
                        .total_cmp(&b.intervention.unwrap_or(f64::INFINITY)),
                )
                .then(ba.cmp(bb))
        })
        .map(|(b, _)| b)
}

fn band_bounds(band: usize) -> (Option<f64>, Option<f64>) {
    (
        band.checked_sub(1).map(|i| PH_UPPER_BOUNDS[i]),
        PH_UPPER_BOUNDS.get(band).copied(),
    )
}

fn up(v: f64) -> f64 {
    v * (1.0 + 1e-9)
}

fn down(v: f64) -> f64 {
    v * (1.0 - 1e-9)
}

// ------------------------------------------------------------------------------------------
// Harness.
// ------------------------------------------------------------------------------------------

/// Collects every failed check (with its context) so one run reports all wrong cells.
#[derive(Default)]
struct Checks {
    count: usize,
    failures: Vec<String>,
}

impl Checks {
    fn eq<T: PartialEq + Debug>(&mut self, ctx: &str, what: &str, got: T, want: T) {
        self.count += 1;
        if got != want {
            self.failures
                .push(format!("{ctx}: {what}: got {got:?}, expected {want:?}"));
        }
    }

    fn ok(&mut self, ctx: &str, what: &str, cond: bool) {
        self.count += 1;
        if !cond {
            self.failures.push(format!("{ctx}: {what}"));
        }
    }

    fn finish(self, test: &str) {
        println!("{test}: {} checks", self.count);
        assert!(self.count > 0, "{test}: no checks ran");
        assert!(
            self.failures.is_empty(),
            "{test}: {} of {} checks failed:\n{}",
            self.failures.len(),
            self.count,
            self.failures.join("\n")
        );
    }
}

fn load(rotation: RotationRule) -> Standards {
    load_standards(Path::new(STANDARDS_DIR), rotation)
        .unwrap_or_else(|e| panic!("loading the shipped standards from {STANDARDS_DIR}: {e}"))
}

fn standards() -> Standards {
    load(RotationRule::Stricter)
}

/// Checks the thresholds returned for one cell against the expectation (`band`: expected pH
/// band index for pH-dependent standards, `None` for development land).
fn check_thresholds(
    c: &mut Checks,
    ctx: &str,
    got: Option<&Thresholds>,
    want: Option<&Expect>,
    band: Option<usize>,
    ph_assumed: bool,
) {
    let (got, want) = match (got, want) {
        (None, None) => {
            c.ok(ctx, "no thresholds (no applicable standard)", true);
            return;
        }
        (Some(g), None) => {
            c.ok(
                ctx,
                &format!("expected no thresholds (no applicable standard), got {g:?}"),
                false,
            );
            return;
        }
        (None, Some(w)) => {
            c.ok(ctx, &format!("expected thresholds {w:?}, got none"), false);
            return;
        }
        (Some(g), Some(w)) => (g, w),
    };
    c.eq(
        ctx,
        "standard_id",
        got.standard_id.as_str(),
        want.standard_id,
    );
    c.eq(
        ctx,
        "standard_version",
        got.standard_version.as_str(),
        STANDARD_VERSION,
    );
    c.eq(ctx, "column", got.column.as_str(), want.column);
    c.eq(ctx, "screening", got.screening, want.screening);
    c.eq(ctx, "intervention", got.intervention, want.intervention);
    c.eq(
        ctx,
        "intervention_source present iff intervention value",
        got.intervention_source.is_some(),
        want.intervention.is_some(),
    );
    let table1 = got.screening_source.contains("Table 1");
    c.ok(
        ctx,
        &format!("screening_source {:?} cites Table 1", got.screening_source),
        table1,
    );
    if let Some(src) = &got.intervention_source {
        let table = if want.standard_id == FARMLAND_ID {
            "Table 3"
        } else {
            "Table 1"
        };
        c.ok(
            ctx,
            &format!("intervention_source {src:?} cites {table}"),
            src.contains(table),
        );
    }
    c.eq(ctx, "ph_assumed", got.ph_assumed, ph_assumed);
    match band {
        Some(b) => match got.ph_band {
            Some(pb) => {
                c.eq(ctx, "ph_band.index", pb.index, b);
                let (lower, upper) = band_bounds(b);
                c.eq(ctx, "ph_band.lower", pb.lower, lower);
                c.eq(ctx, "ph_band.upper", pb.upper, upper);
            }
            None => c.ok(ctx, &format!("ph_band missing, expected band {b}"), false),
        },
        None => c.eq(ctx, "ph_band (not pH-dependent)", got.ph_band, None),
    }
}

/// Judges one cell at and around its thresholds, detected and below the detection limit.
fn check_judgements(
    c: &mut Checks,
    ctx: &str,
    s: &Standards,
    land_use: LandUse,
    ph: Option<f64>,
    metal: Metal,
    want: Option<&Expect>,
) {
    let thresholds = s.thresholds(land_use, ph, metal);
    let mut at = |label: &str, value: f64, detected: bool, level: Level| {
        let j = judge(s, land_use, ph, metal, value, detected);
        let what = format!("judge {label} (value {value}, detected {detected}) → level");
        c.eq(ctx, &what, j.level, level);
        c.eq(
            ctx,
            &format!("judge {label}: thresholds carried"),
            j.thresholds.as_deref(),
            thresholds.as_ref(),
        );
    };
    let Some(w) = want else {
        for v in [0.0, 0.01, 1.0, 1e6] {
            at("no standard", v, true, Level::NoStandard);
            at("no standard, below MDL", v, false, Level::NoStandard);
        }
        return;
    };
    let sv = w.screening;
    at("just below screening", down(sv), true, Level::None);
    at("at screening", sv, true, Level::None);
    at("just above screening", up(sv), true, Level::Screening);
    at("zero", 0.0, true, Level::None);
    match w.intervention {
        Some(iv) => {
            at("midway", (sv + iv) / 2.0, true, Level::Screening);
            at("just below intervention", down(iv), true, Level::Screening);
            at("at intervention", iv, true, Level::Screening);
            at("just above intervention", up(iv), true, Level::Intervention);
            at(
                "far above intervention",
                iv * 1000.0,
                true,
                Level::Intervention,
            );
            at(
                "MDL above intervention",
                up(iv),
                false,
                Level::Undeterminable,
            );
        }
        None => {
            at("ten times screening", sv * 10.0, true, Level::Screening);
            at("huge value, no intervention", 1e9, true, Level::Screening);
        }
    }
    at("MDL well below screening", sv / 10.0, false, Level::None);
    at("MDL just below screening", down(sv), false, Level::None);
    at("MDL at screening", sv, false, Level::None);
    at(
        "MDL just above screening",
        up(sv),
        false,
        Level::Undeterminable,
    );
}

// ------------------------------------------------------------------------------------------
// Tests.
// ------------------------------------------------------------------------------------------

#[test]
fn shipped_standards_load_with_the_expected_shape() {
    let s = standards();
    let mut c = Checks::default();
    c.eq("farmland", "id", s.farmland.id.as_str(), FARMLAND_ID);
    c.eq(
        "farmland",
        "version",
        s.farmland.version.as_str(),
        STANDARD_VERSION,
    );
    c.eq(
        "farmland",
        "ph_upper_bounds",
        s.farmland.ph_upper_bounds.as_slice(),
        PH_UPPER_BOUNDS.as_slice(),
    );
    c.eq(
        "development",
        "id",
        s.development.id.as_str(),
        DEVELOPMENT_ID,
    );
    c.eq(
        "development",
        "version",
        s.development.version.as_str(),
        STANDARD_VERSION,
    );
    c.eq(
        "development",
        "ph_upper_bounds (not pH-dependent)",
        s.development.ph_upper_bounds.as_slice(),
        [].as_slice(),
    );
    c.eq("set", "rotation rule", s.rotation, RotationRule::Stricter);
    for land_use in LandUse::ALL {
        let want = if land_use.is_farmland() {
            FARMLAND_ID
        } else {
            DEVELOPMENT_ID
        };
        c.eq(
            land_use.as_str(),
            "governing standard",
            s.for_land_use(land_use).id.as_str(),
            want,
        );
    }
    c.finish("shipped_standards_load_with_the_expected_shape");
}

/// Every farmland land use × metal × pH band × several pH values per band: thresholds equal the
/// transcription and judgements flip exactly at the thresholds.
#[test]
fn farmland_every_cell_matches_gb15618() {
    let s = standards();
    let mut c = Checks::default();
    let mut cells = 0;
    for land_use in FARMLAND_USES {
        for metal in Metal::ALL {
            for (band, phs) in BAND_PHS.iter().enumerate() {
                let want = farmland_expect(land_use, metal, band);
                for &ph in *phs {
                    cells += 1;
                    let ctx = format!("{land_use} {metal} band {band} pH {ph}");
                    let got = s.thresholds(land_use, Some(ph), metal);
                    check_thresholds(&mut c, &ctx, got.as_ref(), want.as_ref(), Some(band), false);
                    check_judgements(&mut c, &ctx, &s, land_use, Some(ph), metal, want.as_ref());
                }
            }
        }
    }
    println!("farmland cells (land use × metal × pH value): {cells}");
    c.finish("farmland_every_cell_matches_gb15618");
}

/// Both development classes × every metal, with and without a pH (GB 36600 ignores pH).
#[test]
fn development_every_cell_matches_gb36600() {
    let s = standards();
    let mut c = Checks::default();
    let mut cells = 0;
    for land_use in [LandUse::DevelopmentFirst, LandUse::DevelopmentSecond] {
        for metal in Metal::ALL {
            let want = development_expect(land_use, metal);
            for ph in [None, Some(3.0), Some(5.5), Some(6.5), Some(7.5), Some(9.0)] {
                cells += 1;
                let ctx = format!("{land_use} {metal} pH {ph:?}");
                let got = s.thresholds(land_use, ph, metal);
                check_thresholds(&mut c, &ctx, got.as_ref(), want.as_ref(), None, false);
                check_judgements(&mut c, &ctx, &s, land_use, ph, metal, want.as_ref());
            }
        }
    }
    println!("development cells (land use × metal × pH): {cells}");
    c.finish("development_every_cell_matches_gb36600");
}

/// The analytes each standard does not cover: no thresholds and `no_standard`, whatever value.
#[test]
fn metals_outside_a_standard_have_no_standard() {
    let s = standards();
    let mut c = Checks::default();
    let cases: Vec<(LandUse, Metal)> = FARMLAND_USES
        .iter()
        .map(|l| (*l, Metal::Cr6))
        .chain(
            [LandUse::DevelopmentFirst, LandUse::DevelopmentSecond]
                .into_iter()
                .flat_map(|l| [(l, Metal::Zn), (l, Metal::Cr)]),
        )
        .collect();
    for (land_use, metal) in cases {
        for ph in [None, Some(5.0), Some(8.0)] {
            let ctx = format!("{land_use} {metal} pH {ph:?}");
            c.eq(&ctx, "thresholds", s.thresholds(land_use, ph, metal), None);
            for (value, detected) in [(1e6, true), (0.0, true), (1e6, false)] {
                let j = judge(&s, land_use, ph, metal, value, detected);
                c.eq(
                    &ctx,
                    &format!("judge {value} detected {detected}"),
                    j.level,
                    Level::NoStandard,
                );
                c.eq(&ctx, "judgement thresholds", j.thresholds, None);
            }
        }
    }
    c.finish("metals_outside_a_standard_have_no_standard");
}

/// pH exactly on a bound belongs to the lower band; a hair above belongs to the next.
#[test]
fn ph_bounds_are_inclusive_above() {
    let s = standards();
    let mut c = Checks::default();
    for (i, bound) in PH_UPPER_BOUNDS.iter().enumerate() {
        for land_use in FARMLAND_USES {
            for metal in Metal::ALL {
                let Some(below) = farmland_expect(land_use, metal, i) else {
                    continue;
                };
                let above = farmland_expect(land_use, metal, i + 1).unwrap();
                for (ph, band, want) in [
                    (*bound, i, &below),
                    (bound + 1e-5, i + 1, &above),
                    (bound - 1e-5, i, &below),
                ] {
                    let ctx = format!("{land_use} {metal} pH {ph}");
                    let t = s.thresholds(land_use, Some(ph), metal);
                    c.eq(
                        &ctx,
                        "band",
                        t.as_ref().and_then(|t| t.ph_band).map(|b| b.index),
                        Some(band),
                    );
                    c.eq(
                        &ctx,
                        "screening",
                        t.as_ref().map(|t| t.screening),
                        Some(want.screening),
                    );
                    c.eq(
                        &ctx,
                        "intervention",
                        t.and_then(|t| t.intervention),
                        want.intervention,
                    );
                }
            }
        }
    }
    // Named spot checks that differ between the two sides of each bound.
    let spot = [
        (LandUse::Paddy, Metal::Cd, 5.5, 0.3),
        (LandUse::Paddy, Metal::Cd, 5.50001, 0.4),
        (LandUse::Paddy, Metal::Cd, 6.5, 0.4),
        (LandUse::Paddy, Metal::Cd, 6.50001, 0.6),
        (LandUse::Paddy, Metal::Cd, 7.5, 0.6),
        (LandUse::Paddy, Metal::Cd, 7.50001, 0.8),
        (LandUse::DryLand, Metal::As, 6.5, 40.0),
        (LandUse::DryLand, Metal::As, 6.50001, 30.0),
        (LandUse::DryLand, Metal::As, 7.5, 30.0),
        (LandUse::DryLand, Metal::As, 7.50001, 25.0),
        (LandUse::Vegetable, Metal::Ni, 5.5, 60.0),
        (LandUse::Vegetable, Metal::Ni, 5.50001, 70.0),
    ];
    for (land_use, metal, ph, screening) in spot {
        let ctx = format!("{land_use} {metal} pH {ph}");
        c.eq(
            &ctx,
            "screening",
            s.thresholds(land_use, Some(ph), metal).map(|t| t.screening),
            Some(screening),
        );
        let j = judge(&s, land_use, Some(ph), metal, up(screening), true);
        c.eq(&ctx, "just above screening", j.level, Level::Screening);
    }
    c.finish("ph_bounds_are_inclusive_above");
}

/// Orchards read the orchard column for Cu only; every other metal uses "other".
#[test]
fn orchard_uses_its_own_column_for_copper_only() {
    let s = standards();
    let mut c = Checks::default();
    for (band, phs) in BAND_PHS.iter().enumerate() {
        let ph = phs[1];
        let orchard_cu = screening_row(Metal::Cu, Col::Orchard).unwrap()[band];
        let other_cu = screening_row(Metal::Cu, Col::Other).unwrap()[band];
        let ctx = format!("orchard Cu band {band}");
        let t = s.thresholds(LandUse::Orchard, Some(ph), Metal::Cu);
        c.eq(
            &ctx,
            "screening",
            t.as_ref().map(|t| t.screening),
            Some(orchard_cu),
        );
        c.eq(
            &ctx,
            "column",
            t.map(|t| t.column),
            Some("orchard".to_string()),
        );
        // A Cu value between the two columns exceeds on dry land but not in an orchard.
        let between = (orchard_cu + other_cu) / 2.0;
        let ctx = format!("Cu {between} band {band}");
        c.eq(
            &ctx,
            "orchard",
            judge(&s, LandUse::Orchard, Some(ph), Metal::Cu, between, true).level,
            Level::None,
        );
        c.eq(
            &ctx,
            "dry land",
            judge(&s, LandUse::DryLand, Some(ph), Metal::Cu, between, true).level,
            Level::Screening,
        );
        for metal in [Metal::Cd, Metal::Hg, Metal::As, Metal::Pb, Metal::Cr] {
            let other = screening_row(metal, Col::Other).unwrap()[band];
            let ctx = format!("orchard {metal} band {band}");
            let t = s.thresholds(LandUse::Orchard, Some(ph), metal);
            c.eq(
                &ctx,
                "screening = other",
                t.as_ref().map(|t| t.screening),
                Some(other),
            );
            c.eq(
                &ctx,
                "column",
                t.map(|t| t.column),
                Some("other".to_string()),
            );
        }
    }
    c.finish("orchard_uses_its_own_column_for_copper_only");
}

/// The hand-worked rotation table is the cell-wise minimum of the paddy-land and other-land
/// columns, and the loaded standard gives rotation land exactly that table.
#[test]
fn rotation_land_takes_the_stricter_of_paddy_and_other() {
    let s = standards();
    let mut c = Checks::default();
    for (metal, rotation) in ROTATION_SCREENING {
        let (_, paddy) = farmland_column(LandUse::Paddy, metal).unwrap();
        let (_, other) = farmland_column(LandUse::DryLand, metal).unwrap();
        for band in 0..4 {
            let ctx = format!("paddy_upland_rotation {metal} band {band}");
            c.eq(
                &ctx,
                "transcription: rotation = min(paddy, other)",
                rotation[band],
                paddy[band].min(other[band]),
            );
            let ph = BAND_PHS[band][1];
            let t = s.thresholds(LandUse::PaddyUplandRotation, Some(ph), metal);
            c.eq(
                &ctx,
                "screening",
                t.as_ref().map(|t| t.screening),
                Some(rotation[band]),
            );
            c.eq(
                &ctx,
                "intervention",
                t.and_then(|t| t.intervention),
                intervention_row(metal).map(|r| r[band]),
            );
        }
    }
    // The paddy column is not always the stricter one.
    let rot = |metal: Metal, band: usize| {
        s.thresholds(LandUse::PaddyUplandRotation, Some(BAND_PHS[band][1]), metal)
            .map(|t| t.screening)
    };
    for band in 0..4 {
        let paddy_as = screening_row(Metal::As, Col::Paddy).unwrap()[band];
        c.eq(
            &format!("rotation As band {band}"),
            "paddy (lower)",
            rot(Metal::As, band),
            Some(paddy_as),
        );
        let other_pb = screening_row(Metal::Pb, Col::Other).unwrap()[band];
        c.eq(
            &format!("rotation Pb band {band}"),
            "other (lower)",
            rot(Metal::Pb, band),
            Some(other_pb),
        );
    }
    c.eq(
        "rotation Cd 5.5<pH<=6.5",
        "other 0.3 < paddy 0.4",
        rot(Metal::Cd, 1),
        Some(0.3),
    );
    let j = judge(
        &s,
        LandUse::PaddyUplandRotation,
        Some(6.0),
        Metal::Cd,
        0.35,
        true,
    );
    c.eq(
        "rotation Cd 0.35 at pH 6.0",
        "level",
        j.level,
        Level::Screening,
    );
    let j = judge(&s, LandUse::Paddy, Some(6.0), Metal::Cd, 0.35, true);
    c.eq("paddy Cd 0.35 at pH 6.0", "level", j.level, Level::None);
    c.finish("rotation_land_takes_the_stricter_of_paddy_and_other");
}

/// The configurable alternatives: rotation land judged as paddy land, or as other land.
#[test]
fn rotation_rule_paddy_or_other_reads_that_column() {
    let mut c = Checks::default();
    for (rule, as_land) in [
        (RotationRule::Paddy, LandUse::Paddy),
        (RotationRule::Other, LandUse::DryLand),
    ] {
        let s = load(rule);
        for metal in Metal::ALL {
            for (band, phs) in BAND_PHS.iter().enumerate() {
                let ph = phs[1];
                let ctx = format!("rotation rule {rule:?} {metal} band {band}");
                let want = farmland_expect(as_land, metal, band);
                let got = s.thresholds(LandUse::PaddyUplandRotation, Some(ph), metal);
                c.eq(
                    &ctx,
                    "screening",
                    got.as_ref().map(|t| t.screening),
                    want.as_ref().map(|w| w.screening),
                );
                c.eq(
                    &ctx,
                    "intervention",
                    got.and_then(|t| t.intervention),
                    want.and_then(|w| w.intervention),
                );
            }
        }
    }
    c.finish("rotation_rule_paddy_or_other_reads_that_column");
}

/// Without a pH, farmland is judged in its strictest band and says so.
#[test]
fn missing_ph_uses_the_strictest_band() {
    let s = standards();
    let mut c = Checks::default();
    for land_use in FARMLAND_USES {
        for metal in Metal::ALL {
            let ctx = format!("{land_use} {metal} pH unknown");
            let band = strictest_band(land_use, metal);
            let want = band.and_then(|b| farmland_expect(land_use, metal, b));
            let got = s.thresholds(land_use, None, metal);
            check_thresholds(&mut c, &ctx, got.as_ref(), want.as_ref(), band, true);
            check_judgements(&mut c, &ctx, &s, land_use, None, metal, want.as_ref());
            // No band has a lower screening value than the one used.
            if let (Some(g), Some(_)) = (&got, &want) {
                for b in 0..4 {
                    let e = farmland_expect(land_use, metal, b).unwrap();
                    c.ok(
                        &ctx,
                        &format!(
                            "screening {} <= band {b} screening {}",
                            g.screening, e.screening
                        ),
                        g.screening <= e.screening,
                    );
                }
            }
        }
    }
    // Named cases from domain.md: As thresholds fall as pH rises; Cd paddy rises with pH.
    for land_use in FARMLAND_USES {
        let t = s.thresholds(land_use, None, Metal::As);
        c.eq(
            &format!("{land_use} As pH unknown"),
            "band (pH>7.5)",
            t.and_then(|t| t.ph_band).map(|b| b.index),
            Some(3),
        );
    }
    let t = s.thresholds(LandUse::Paddy, None, Metal::Cd).unwrap();
    c.eq(
        "paddy Cd pH unknown",
        "band (pH<=5.5)",
        t.ph_band.map(|b| b.index),
        Some(0),
    );
    c.eq("paddy Cd pH unknown", "screening", t.screening, 0.3);
    c.eq(
        "paddy Cd pH unknown",
        "intervention",
        t.intervention,
        Some(1.5),
    );
    c.eq("paddy Cd pH unknown", "ph_assumed", t.ph_assumed, true);
    let t = s.thresholds(LandUse::Paddy, None, Metal::As).unwrap();
    c.eq("paddy As pH unknown", "screening", t.screening, 20.0);
    c.eq(
        "paddy As pH unknown",
        "intervention",
        t.intervention,
        Some(100.0),
    );
    let j = judge(&s, LandUse::Paddy, None, Metal::As, 22.0, true);
    c.eq("paddy As 22 pH unknown", "level", j.level, Level::Screening);
    c.eq(
        "paddy As 22 pH unknown",
        "ph_assumed",
        j.thresholds.map(|t| t.ph_assumed),
        Some(true),
    );
    // With a pH, nothing is assumed.
    let t = s.thresholds(LandUse::Paddy, Some(6.0), Metal::As).unwrap();
    c.eq("paddy As pH 6.0", "ph_assumed", t.ph_assumed, false);
    c.finish("missing_ph_uses_the_strictest_band");
}

/// Below-detection results: a pass only when the MDL is at or below the screening value.
#[test]
fn below_detection_limit_is_none_or_undeterminable() {
    let s = standards();
    let mut c = Checks::default();
    // An MDL far above 0.3 (as with FAAS, which cannot reach Cd 0.3 mg/kg).
    for land_use in FARMLAND_USES {
        for (band, phs) in BAND_PHS.iter().enumerate() {
            let ph = phs[0];
            let screening = farmland_expect(land_use, Metal::Cd, band)
                .unwrap()
                .screening;
            let ctx = format!("{land_use} Cd band {band} pH {ph}");
            for mdl in [1.0, 5.0] {
                let want = if mdl <= screening {
                    Level::None
                } else {
                    Level::Undeterminable
                };
                let j = judge(&s, land_use, Some(ph), Metal::Cd, mdl, false);
                c.eq(&ctx, &format!("not detected, MDL {mdl}"), j.level, want);
                c.ok(
                    &ctx,
                    "undeterminable carries thresholds",
                    j.thresholds.is_some(),
                );
            }
        }
    }
    let j = judge(&s, LandUse::Paddy, Some(5.0), Metal::Cd, 1.0, false);
    c.eq(
        "paddy Cd pH 5.0 MDL 1.0",
        "level",
        j.level,
        Level::Undeterminable,
    );
    c.ok(
        "paddy Cd pH 5.0 MDL 1.0",
        "not an exceedance",
        !j.level.exceeds(),
    );
    // The same value, detected, is an exceedance.
    let j = judge(&s, LandUse::Paddy, Some(5.0), Metal::Cd, 1.0, true);
    c.eq(
        "paddy Cd pH 5.0 value 1.0",
        "level",
        j.level,
        Level::Screening,
    );
    // Typical MDLs from domain.md are all at or below the thresholds: not detected → none.
    for (method, metal, mdl) in TYPICAL_MDLS {
        for land_use in LandUse::ALL {
            for ph in [None, Some(5.0), Some(8.0)] {
                let ctx = format!("{method} {metal} MDL {mdl} on {land_use} pH {ph:?}");
                let want = if land_use.is_farmland() {
                    let band = match ph {
                        None => strictest_band(land_use, metal),
                        Some(p) => Some(PH_UPPER_BOUNDS.iter().filter(|b| p > **b).count()),
                    };
                    band.and_then(|b| farmland_expect(land_use, metal, b))
                } else {
                    development_expect(land_use, metal)
                };
                let level = match want {
                    None => Level::NoStandard,
                    Some(w) if mdl <= w.screening => Level::None,
                    Some(_) => Level::Undeterminable,
                };
                let j = judge(&s, land_use, ph, metal, mdl, false);
                c.eq(&ctx, "level", j.level, level);
            }
        }
    }
    c.finish("below_detection_limit_is_none_or_undeterminable");
}

/// Cu, Ni and Zn have no farmland intervention value: above screening is safe utilisation,
/// never strict control, however high.
#[test]
fn copper_nickel_zinc_never_reach_intervention_on_farmland() {
    let s = standards();
    let mut c = Checks::default();
    for land_use in FARMLAND_USES {
        for metal in [Metal::Cu, Metal::Ni, Metal::Zn] {
            for ph in [None, Some(5.0), Some(6.0), Some(7.0), Some(8.0)] {
                let ctx = format!("{land_use} {metal} pH {ph:?}");
                let t = s.thresholds(land_use, ph, metal);
                c.ok(&ctx, "has screening thresholds", t.is_some());
                c.eq(
                    &ctx,
                    "intervention",
                    t.as_ref().and_then(|t| t.intervention),
                    None,
                );
                c.eq(
                    &ctx,
                    "intervention_source",
                    t.and_then(|t| t.intervention_source),
                    None,
                );
                for value in [1e4, 1e6, 1e9] {
                    let j = judge(&s, land_use, ph, metal, value, true);
                    c.eq(&ctx, &format!("judge {value}"), j.level, Level::Screening);
                }
            }
        }
    }
    c.finish("copper_nickel_zinc_never_reach_intervention_on_farmland");
}

// ------------------------------------------------------------------------------------------
// Validation: broken copies of the shipped files are refused.
// ------------------------------------------------------------------------------------------

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Splits a standards file into its header and its `[[threshold]]` blocks.
fn split_rows(text: &str) -> (String, Vec<String>) {
    let mut parts = text.split("[[threshold]]");
    let header = parts.next().unwrap().to_string();
    (header, parts.map(str::to_string).collect())
}

fn join_rows(header: &str, rows: &[String]) -> String {
    let mut out = header.to_string();
    for r in rows {
        out.push_str("[[threshold]]");
        out.push_str(r);
    }
    out
}

/// The right-hand side of `key = …` in a block, quotes stripped.
fn field(block: &str, key: &str) -> String {
    let prefix = format!("{key} = ");
    block
        .lines()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key} in block {block:?}"))
        .trim_matches('"')
        .to_string()
}

/// Replaces the `key = …` line of a block.
fn set_field(block: &str, key: &str, rhs: &str) -> String {
    let prefix = format!("{key} = ");
    let mut found = false;
    let out: Vec<String> = block
        .split('\n')
        .map(|l| {
            if l.trim().starts_with(&prefix) {
                found = true;
                format!("{prefix}{rhs}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(found, "no {key} line in block {block:?}");
    out.join("\n")
}

fn values_of(block: &str) -> Vec<String> {
    let rhs = field(block, "values");
    let inner = rhs
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or_else(|| panic!("values not a one-line array: {rhs:?}"));
    inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn with_values(block: &str, values: &[String]) -> String {
    set_field(block, "values", &format!("[{}]", values.join(", ")))
}

fn row_label(block: &str) -> String {
    format!(
        "{} {} {}",
        field(block, "metal"),
        field(block, "level"),
        field(block, "column")
    )
}

/// One edited copy of a file: what was done, the text, and a word the refusal must contain
/// (so a refusal for an unrelated reason does not count).
struct Broken {
    what: String,
    text: String,
    reason: String,
}

/// Applies `edit` to row `i` of the file (`None` removes the row).
fn edit_row(header: &str, rows: &[String], i: usize, edit: Option<String>) -> String {
    let mut rows = rows.to_vec();
    match edit {
        Some(r) => rows[i] = r,
        None => {
            rows.remove(i);
        }
    }
    join_rows(header, &rows)
}

/// The row-level breakages common to both files.
fn broken_copies(text: &str, foreign_column: &str) -> Vec<Broken> {
    let (header, rows) = split_rows(text);
    let mut out = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let label = row_label(row);
        let metal = field(row, "metal");
        let values = values_of(row);
        let mut push_because = |what: String, edit: Option<String>, reason: &str| {
            out.push(Broken {
                what: format!("{label}: {what}"),
                text: edit_row(&header, &rows, i, edit),
                reason: reason.to_string(),
            })
        };
        let mut push = |what: String, edit: Option<String>| push_because(what, edit, &metal);
        push("row removed".into(), None);
        let mut fewer = values.clone();
        fewer.pop();
        push(
            format!("{} values", fewer.len()),
            Some(with_values(row, &fewer)),
        );
        let mut more = values.clone();
        more.push(values[values.len() - 1].clone());
        push(
            format!("{} values", more.len()),
            Some(with_values(row, &more)),
        );
        push("no values".into(), Some(with_values(row, &[])));
        for k in 0..values.len() {
            for bad in [
                format!("-{}", values[k]),
                "0.0".into(),
                "nan".into(),
                "inf".into(),
            ] {
                let mut v = values.clone();
                v[k] = bad.clone();
                push(format!("value {k} = {bad}"), Some(with_values(row, &v)));
            }
        }
        for col in ["rice", foreign_column, ""] {
            push(
                format!("column {col:?}"),
                Some(set_field(row, "column", &format!("{col:?}"))),
            );
        }
        push_because(
            "metal \"Fe\"".into(),
            Some(set_field(row, "metal", "\"Fe\"")),
            "Fe",
        );
        push_because(
            "unknown key".into(),
            Some(format!("{row}colour = \"red\"\n")),
            "colour",
        );
        let mut dup = rows.clone();
        dup.insert(i, row.clone());
        out.push(Broken {
            what: format!("{label}: duplicated"),
            text: join_rows(&header, &dup),
            reason: metal.clone(),
        });
    }
    out
}

/// Asserts that `text` (the unedited file) loads, then that every broken copy is refused for
/// its own reason.
fn expect_refused(c: &mut Checks, origin: &str, text: &str, broken: &[Broken]) {
    let baseline = Standard::from_toml(text, origin);
    c.ok(
        origin,
        &format!(
            "the unedited file must load for the refusals to mean anything: {:?}",
            baseline.as_ref().err()
        ),
        baseline.is_ok(),
    );
    c.ok(origin, "broken copies were built", !broken.is_empty());
    for b in broken {
        let ctx = format!("{origin}: {}", b.what);
        match Standard::from_toml(&b.text, origin) {
            Ok(_) => c.ok(&ctx, "accepted, expected refusal", false),
            Err(e) => {
                let named = matches!(
                    e,
                    StandardError::Invalid { .. } | StandardError::Parse { .. }
                );
                c.ok(&ctx, &format!("refused with a file error, got {e}"), named);
                let msg = e.to_string();
                c.ok(
                    &ctx,
                    &format!("error names the file: {msg}"),
                    msg.contains(origin),
                );
                c.ok(
                    &ctx,
                    &format!("error names {:?}: {msg}", b.reason),
                    msg.contains(&b.reason),
                );
            }
        }
    }
}

/// The helpers rebuild the shipped files byte for byte and an unchanged copy loads: every
/// refusal below is caused by its edit.
#[test]
fn unedited_copies_are_accepted() {
    let mut c = Checks::default();
    for path in [FARMLAND_FILE, DEVELOPMENT_FILE] {
        let text = read(path);
        let (header, rows) = split_rows(&text);
        c.eq(
            path,
            "split and join round trip",
            join_rows(&header, &rows),
            text.clone(),
        );
        let rebuilt: Vec<String> = rows.iter().map(|r| with_values(r, &values_of(r))).collect();
        let rebuilt = join_rows(&header, &rebuilt);
        let r = Standard::from_toml(&rebuilt, path);
        c.ok(
            path,
            &format!("rebuilt copy loads: {:?}", r.as_ref().err()),
            r.is_ok(),
        );
    }
    let farmland = split_rows(&read(FARMLAND_FILE)).1;
    c.eq(
        "farmland",
        "row count (14 screening + 5 intervention)",
        farmland.len(),
        19,
    );
    let development = split_rows(&read(DEVELOPMENT_FILE)).1;
    c.eq(
        "development",
        "row count (7 metals × 2 levels × 2 classes)",
        development.len(),
        28,
    );
    c.finish("unedited_copies_are_accepted");
}

#[test]
fn farmland_file_with_a_broken_row_is_refused() {
    let mut c = Checks::default();
    let text = read(FARMLAND_FILE);
    let broken = broken_copies(&text, "first");
    expect_refused(&mut c, "gb15618-broken.toml", &text, &broken);
    println!("farmland broken copies: {}", broken.len());
    c.finish("farmland_file_with_a_broken_row_is_refused");
}

#[test]
fn development_file_with_a_broken_row_is_refused() {
    let mut c = Checks::default();
    let text = read(DEVELOPMENT_FILE);
    let broken = broken_copies(&text, "paddy");
    expect_refused(&mut c, "gb36600-broken.toml", &text, &broken);
    println!("development broken copies: {}", broken.len());
    c.finish("development_file_with_a_broken_row_is_refused");
}

/// A screening value above the intervention value of its metal and band is refused; equal is
/// allowed (screening ≤ intervention).
#[test]
fn farmland_screening_above_intervention_is_refused() {
    let text = read(FARMLAND_FILE);
    let (header, rows) = split_rows(&text);
    let mut c = Checks::default();
    let mut refused = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        if field(row, "level") != "screening" {
            continue;
        }
        let metal = Metal::parse(&field(row, "metal")).unwrap();
        let Some(intervention) = intervention_row(metal) else {
            continue;
        };
        let values = values_of(row);
        for (band, iv) in intervention.iter().enumerate() {
            let label = format!("{} band {band}", row_label(row));
            let mut v = values.clone();
            v[band] = format!("{:?}", iv * 1.01);
            refused.push(Broken {
                what: format!("{label}: screening {} > intervention {iv}", v[band]),
                text: edit_row(&header, &rows, i, Some(with_values(row, &v))),
                reason: metal.symbol().to_string(),
            });
            v[band] = format!("{iv:?}");
            let equal = edit_row(&header, &rows, i, Some(with_values(row, &v)));
            let r = Standard::from_toml(&equal, "gb15618-equal.toml");
            c.ok(
                &label,
                &format!(
                    "screening = intervention {iv} accepted: {:?}",
                    r.as_ref().err()
                ),
                r.is_ok(),
            );
        }
    }
    // And the other way round: an intervention value lowered below a screening value.
    for (i, row) in rows.iter().enumerate() {
        if field(row, "level") != "intervention" {
            continue;
        }
        let metal = Metal::parse(&field(row, "metal")).unwrap();
        let values = values_of(row);
        for band in 0..values.len() {
            let highest = FARMLAND_SCREENING
                .iter()
                .filter(|(m, _, _)| *m == metal)
                .map(|r| r.2[band])
                .fold(f64::MIN, f64::max);
            let mut v = values.clone();
            v[band] = format!("{:?}", highest * 0.99);
            refused.push(Broken {
                what: format!(
                    "{metal} intervention band {band} = {} < screening {highest}",
                    v[band]
                ),
                text: edit_row(&header, &rows, i, Some(with_values(row, &v))),
                reason: metal.symbol().to_string(),
            });
        }
    }
    c.ok(
        "screening > intervention",
        "some cases built",
        refused.len() == 5 * 2 * 4 + 5 * 4,
    );
    expect_refused(&mut c, "gb15618-inverted.toml", &text, &refused);
    c.finish("farmland_screening_above_intervention_is_refused");
}

/// A set needs exactly one farmland and one development standard.
#[test]
fn standards_set_needs_one_of_each() {
    let farmland = Standard::from_toml(&read(FARMLAND_FILE), FARMLAND_FILE).unwrap();
    let development = Standard::from_toml(&read(DEVELOPMENT_FILE), DEVELOPMENT_FILE).unwrap();
    let mut c = Checks::default();
    let cases = [
        ("both", vec![farmland.clone(), development.clone()], true),
        ("farmland only", vec![farmland.clone()], false),
        ("development only", vec![development.clone()], false),
        (
            "two farmland",
            vec![farmland.clone(), farmland.clone(), development.clone()],
            false,
        ),
        ("empty", vec![], false),
    ];
    for (what, list, ok) in cases {
        let r = Standards::from_standards(list, RotationRule::Stricter);
        c.eq(what, "accepted", r.is_ok(), ok);
    }
    c.finish("standards_set_needs_one_of_each");
}
