//! Lab batch uploads end to end: real HTTP to `soilmon run`, a fresh TimescaleDB database and
//! a per-test mosquitto. Points and thresholds are those of `common::pipeline::TEST_POINTS`
//! (441781-T-0001: paddy, pH 6.2 → Cd screening 0.4 mg/kg).

mod common;

use std::time::{Duration, Instant};

use common::lab::{batch_of, clean_batch, codes, LabService, HEADER};
use common::pipeline::json_of;
use common::repo_path;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// A clean batch with samples, duplicates, a blank, a CRM and a spike → 201; every row is
/// stored with its QC type, only field samples become readings, the exceedance is alerted.
#[tokio::test]
async fn clean_batch_is_stored_judged_and_alerted() -> anyhow::Result<()> {
    let s = LabService::start(&[]).await?;
    let alerts = s.p.subscribe("soil/v1/alerts/#").await?;
    let (status, report) = s.upload(&clean_batch("B-CLEAN")).await?;
    assert_eq!(status, 201, "{report}\n{}", s.p.soilmon.log());
    assert_eq!(report["status"], "accepted");
    assert_eq!(report["rows"], 8);
    assert_eq!(report["by_judgement"]["screening"], 1);
    assert_eq!(report["by_judgement"]["none"], 2);
    assert_eq!(report["alerts"], 1);
    assert_eq!(report["qc"]["crm"]["checked"], 1);
    assert_eq!(report["qc"]["duplicates"]["checked"], 2);
    assert_eq!(report["qc"]["spikes"]["checked"], 1);

    let got = alerts.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1, "log:\n{}", s.p.soilmon.log());
    assert_eq!(got[0].0, "soil/v1/alerts/441781/441781-T-0001/Cd");
    let alert = json_of(&got[0].1);
    assert_eq!(alert["state"], "opened");
    assert_eq!(alert["source"], "lab");
    assert_eq!(alert["source_id"], "B-CLEAN");
    assert_eq!(alert["msg_id"], "S1");
    assert_eq!(alert["value_mgkg"], 0.45);

    assert_eq!(
        s.p.count(
            "SELECT count(*) FROM readings_full WHERE source = 'lab' AND source_id = 'B-CLEAN'"
        )
        .await?,
        3
    );
    assert_eq!(s.p.count("SELECT count(*) FROM lab_rows").await?, 8);
    for (qc, n) in [
        ("sample", 3),
        ("field_duplicate", 1),
        ("lab_duplicate", 1),
        ("blank", 1),
        ("crm", 1),
        ("spike", 1),
    ] {
        let sql = format!("SELECT count(*) FROM lab_rows WHERE qc_type = '{qc}'");
        assert_eq!(s.p.count(&sql).await?, n, "{qc}");
    }
    assert_eq!(
        s.p.count("SELECT count(*) FROM lab_rows WHERE qc_type <> 'sample' AND level IS NOT NULL")
            .await?,
        0,
        "QC rows are never judged"
    );

    let (st, body) = s
        .get("/v1/lab/batches/B-CLEAN", Some(&s.viewer_token))
        .await?;
    assert_eq!(st, 200);
    let body: Value = serde_json::from_str(&body)?;
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["report"]["alerts"], 1);
    assert_eq!(
        s.get("/v1/lab/batches/NOPE", Some(&s.lab_token)).await?.0,
        404
    );
    assert_eq!(s.get("/readyz", None).await?.0, 200);
    let (st, metrics) = s.get("/metrics", None).await?;
    assert_eq!(st, 200);
    assert!(
        metrics.contains("soilmon_lab_batches_total{outcome=\"accepted\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("soilmon_commit_seconds_bucket"),
        "{metrics}"
    );
    Ok(())
}

/// The same content again → 200 with the original report, nothing stored twice (also when
/// sent as JSON); the same batch id with a changed value → 409.
#[tokio::test]
async fn reupload_is_idempotent_and_changed_content_conflicts() -> anyhow::Result<()> {
    let s = LabService::start(&[]).await?;
    let csv = clean_batch("B-IDEM");
    let (st, first) = s.upload(&csv).await?;
    assert_eq!(st, 201, "{first}");
    let (st, again) = s.upload(&csv.replace('\n', "\r\n")).await?;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again, first, "the original report");
    let rows: Vec<Value> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = HEADER.split(',').collect();
            let vals: Vec<&str> = l.split(',').collect();
            let obj: serde_json::Map<String, Value> = cols
                .iter()
                .zip(vals)
                .filter(|(_, v)| !v.is_empty())
                .map(|(c, v)| (c.to_string(), Value::String(v.to_string())))
                .collect();
            Value::Object(obj)
        })
        .collect();
    let json = serde_json::to_vec(&serde_json::json!({ "rows": rows }))?;
    let (st, _) = s.post(Some(&s.lab_token), "application/json", json).await?;
    assert_eq!(st, 200, "the same content as JSON is the same batch");
    assert_eq!(s.p.count("SELECT count(*) FROM lab_rows").await?, 8);
    assert_eq!(s.p.count("SELECT count(*) FROM readings_full").await?, 3);

    let (st, body) = s.upload(&csv.replace(",0.45,", ",0.46,")).await?;
    assert_eq!(st, 409, "{body}");
    assert_eq!(body["batch_id"], "B-IDEM");
    assert_eq!(s.p.count("SELECT count(*) FROM readings_full").await?, 3);
    Ok(())
}

/// A CRM outside its certified range invalidates the batch: 422, nothing stored.
#[tokio::test]
async fn crm_out_of_range_rejects_the_whole_batch() -> anyhow::Result<()> {
    let s = LabService::start(&[]).await?;
    let csv = clean_batch("B-CRM").replace(",550,", ",600,");
    let (st, report) = s.upload(&csv).await?;
    assert_eq!(st, 422, "{report}");
    assert_eq!(
        codes(&report),
        vec![("qc_crm_out_of_range".into(), Some(8))]
    );
    assert_eq!(s.p.count("SELECT count(*) FROM readings_full").await?, 0);
    assert_eq!(s.p.count("SELECT count(*) FROM lab_rows").await?, 0);
    assert_eq!(s.p.count("SELECT count(*) FROM outbox").await?, 0);
    let (st, body) = s.get("/v1/lab/batches/B-CRM", Some(&s.lab_token)).await?;
    assert_eq!(st, 200);
    assert!(body.contains("\"rejected\""), "{body}");
    // A rejected batch may be corrected and sent again under the same id.
    let (st, report) = s.upload(&clean_batch("B-CRM")).await?;
    assert_eq!(st, 201, "{report}");
    Ok(())
}

/// Every check code, one bad batch each, over HTTP; each is refused whole with its code and
/// line. Also: conflicts with stored data, and a batch with many errors reports them all.
#[tokio::test]
async fn every_check_code_is_reported_with_its_line() -> anyhow::Result<()> {
    let s = LabService::start(&[]).await?;
    let ok = clean_batch("X");
    let swap = |from: &str, to: &str| {
        assert!(ok.contains(from), "{from}");
        ok.replacen(from, to, 1)
    };
    let cases: Vec<(&str, String, Option<u64>)> = vec![
        ("malformed_batch", format!("{ok}X,LAB1,S9\n"), Some(10)),
        ("missing_column", ok.replace(",qc_type,", ",kind,"), Some(1)),
        ("empty_batch", format!("{HEADER}\n"), None),
        ("missing_field", swap(",0.45,", ",,"), Some(2)),
        ("bad_type", swap(",0.45,", ",0.4x,"), Some(2)),
        ("bad_timestamp", swap("2026-11-20 09:30,0,20,6.2,Cd", "1999-01-01,0,20,6.2,Cd"), Some(2)),
        ("future_timestamp", swap("2026-11-20 09:30,0,20,6.2,Cd", "2999-01-01,0,20,6.2,Cd"), Some(2)),
        ("unknown_point", swap("S2,441702-T-0001", "S2,441702-T-9999"), Some(4)),
        ("unknown_metal", swap(",Pb,50,", ",Fe,50,"), Some(3)),
        ("unknown_unit", swap(",Pb,50,mg/kg", ",Pb,50,mg/L"), Some(3)),
        ("negative_value", swap(",Pb,50,", ",Pb,-50,"), Some(3)),
        ("implausible_value", swap(",Pb,50,mg/kg", ",Pb,500,g/kg"), Some(3)),
        ("missing_mdl", swap(",Pb,50,mg/kg,true,2,", ",Pb,50,mg/kg,false,,"), Some(3)),
        ("ph_out_of_range", swap(",7.0,Cd,", ",17.0,Cd,"), Some(4)),
        ("bad_depth", swap(",0,20,7.0,", ",30,20,7.0,"), Some(4)),
        ("duplicate_row", format!("{ok}X,LAB1,S1,441781-T-0001,2026-11-20 09:30,0,20,6.2,Cd,0.45,mg/kg,true,0.07,HJ 803,sample,\n"), Some(10)),
        ("batch_mismatch", swap("X,LAB1,S2,", "Y,LAB1,S2,"), Some(4)),
        ("orphan_qc_ref", swap("lab_duplicate,S2", "lab_duplicate,S7"), Some(6)),
        ("qc_duplicate_rate", ok.lines().filter(|l| !l.contains("duplicate")).map(|l| format!("{l}\n")).collect(), None),
        ("qc_blank_rate", ok.lines().filter(|l| !l.contains("blank")).map(|l| format!("{l}\n")).collect(), None),
        ("qc_duplicate_deviation", swap(",0.47,", ",0.9,"), Some(5)),
        ("qc_blank_above_mdl", swap(",0.01,mg/kg,true,0.07,HJ 803,blank", ",0.2,mg/kg,true,0.07,HJ 803,blank"), Some(7)),
        ("qc_crm_out_of_range", swap(",550,", ",500,"), Some(8)),
        ("qc_spike_recovery", swap(",95,", ",60,"), Some(9)),
    ];
    for (i, (code, body, line)) in cases.iter().enumerate() {
        let body = body.replace("X,LAB1", &format!("C{i},LAB1"));
        let (st, report) = s.upload(&body).await?;
        assert_eq!(st, 422, "{code}: {report}");
        let found = codes(&report);
        assert!(
            found.contains(&(code.to_string(), *line)),
            "{code} at {line:?} not in {found:?}"
        );
    }

    // Against stored data: the same sample and metal from another batch.
    let (st, r) = s.upload(&clean_batch("STORED")).await?;
    assert_eq!(st, 201, "{r}");
    let (st, r) = s
        .upload(&clean_batch("OTHER").replace(",0.45,", ",0.44,"))
        .await?;
    assert_eq!(st, 422);
    let found = codes(&r);
    assert!(
        found.contains(&("conflicts_with_stored".into(), Some(2))),
        "{found:?}"
    );
    assert!(
        found.contains(&("already_stored".into(), Some(3))),
        "{found:?}"
    );

    // Many errors at once: all reported, with their lines.
    let many = batch_of(
        "MANY",
        &[
            "S1,441781-T-0001,2026-11-20,0,20,6.2,Cd,abc,mg/kg,true,0.07,M,sample,",
            "S2,441781-T-9999,2026-11-20,0,20,6.2,Fe,1,mg/kg,true,0.07,M,sample,",
            "S3,441781-T-0001,2999-11-20,0,20,16,Cd,-1,ppq,maybe,0.07,M,sample,",
            "S4,441781-T-0001,2026-11-20,0,20,6.2,Cd,0.1,mg/kg,false,,M,sample,",
        ],
    );
    let (st, r) = s.upload(&many).await?;
    assert_eq!(st, 422);
    let found = codes(&r);
    for expected in [
        ("bad_type", Some(2)),
        ("unknown_point", Some(3)),
        ("unknown_metal", Some(3)),
        ("future_timestamp", Some(4)),
        ("ph_out_of_range", Some(4)),
        ("negative_value", Some(4)),
        ("unknown_unit", Some(4)),
        ("bad_type", Some(4)),
        ("missing_mdl", Some(5)),
    ] {
        let e = (expected.0.to_string(), expected.1);
        assert!(found.contains(&e), "{e:?} not in {found:?}");
    }
    assert_eq!(r["error_count"].as_u64(), Some(found.len() as u64));
    assert_eq!(
        s.p.count("SELECT count(*) FROM readings_full WHERE source_id <> 'STORED'")
            .await?,
        0
    );
    Ok(())
}

/// 401 without or with a wrong token, 403 for a role that may not upload, 413 beyond the
/// body limit, 415 for other media types.
#[tokio::test]
async fn auth_and_size_limits() -> anyhow::Result<()> {
    let s = LabService::start(&[("SOILMON__HTTP__BODY_LIMIT_BYTES", "4096")]).await?;
    let csv = clean_batch("B-AUTH").into_bytes();
    let (st, _) = s.post(None, "text/csv", csv.clone()).await?;
    assert_eq!(st, 401);
    let (st, _) = s.post(Some("not-a-token"), "text/csv", csv.clone()).await?;
    assert_eq!(st, 401);
    let (st, _) = s
        .post(Some(&s.viewer_token), "text/csv", csv.clone())
        .await?;
    assert_eq!(st, 403);
    assert_eq!(s.get("/v1/lab/batches/B-AUTH", None).await?.0, 401);
    let big = format!("{HEADER}\n{}", "x".repeat(5000)).into_bytes();
    let (st, body) = s.post(Some(&s.lab_token), "text/csv", big).await?;
    assert_eq!(st, 413, "{body}");
    let (st, _) = s
        .post(Some(&s.lab_token), "application/xml", csv.clone())
        .await?;
    assert_eq!(st, 415);
    let (st, body) = s.post(Some(&s.lab_token), "text/csv", csv).await?;
    assert_eq!(st, 201, "{body}");
    Ok(())
}

/// BOM, CRLF, tab-separated, quoted fields and Chinese headers are all read.
#[tokio::test]
async fn csv_variants_are_accepted() -> anyhow::Result<()> {
    let s = LabService::start(&[]).await?;
    // Distinct sample ids per batch (the same sample in two batches is refused).
    let batch = |id: &str| {
        clean_batch(id)
            .replace(",S", &format!(",{id}-S"))
            .replace(",BLK1", &format!(",{id}-BLK1"))
            .replace(",CRM1", &format!(",{id}-CRM1"))
    };
    let bom_crlf = format!("\u{feff}{}", batch("V-BOM").replace('\n', "\r\n"));
    let tabs = batch("V-TAB").replace(',', "\t");
    let quoted = batch("V-QUOTE").replace("HJ 803", "\"HJ 803-2016, ICP-MS\"");
    let chinese = batch("V-ZH").replacen(
        HEADER,
        "批次号,实验室,样品编号,点位编号,采样时间,采样深度上限,采样深度下限,pH,检测项目,测定值,单位,是否检出,检出限,分析方法,质控类型,质控关联",
        1,
    );
    for (name, body) in [
        ("bom+crlf", bom_crlf),
        ("tabs", tabs),
        ("quoted", quoted),
        ("chinese", chinese),
    ] {
        let (st, r) = s.upload(&body).await?;
        assert_eq!(st, 201, "{name}: {r}");
    }
    let method: String =
        s.p.db()
            .await?
            .query_one(
                "SELECT method FROM lab_rows WHERE batch_id = 'V-QUOTE' LIMIT 1",
                &[],
            )
            .await?
            .get(0);
    assert_eq!(method, "HJ 803-2016, ICP-MS");
    Ok(())
}

/// `soilmon upload` of the shipped example batch prints a readable report and exits 0; a
/// second upload, and the same batch as the shipped xlsx, are reported as already uploaded; a
/// bad file exits 2 with line numbers.
#[tokio::test]
async fn upload_cli_prints_a_report() -> anyhow::Result<()> {
    let s = LabService::start(&[("SOILMON__INGEST__REGISTRY_REFRESH_SECS", "1")]).await?;
    let demo = repo_path("config/points/demo.csv");
    let out =
        s.p.soilmon
            .command(&["points", "import", &demo.to_string_lossy()])
            .await?;
    assert!(out.status.success());
    let token_file = s.dir.path().join("token");
    std::fs::write(&token_file, format!("{}\n", s.lab_token))?;
    let example = repo_path("config/lab/example-batch.csv");
    let args = |file: &str| {
        vec![
            "upload".to_string(),
            file.to_string(),
            "--server".to_string(),
            s.base.clone(),
            "--token-file".to_string(),
            token_file.to_string_lossy().into_owned(),
        ]
    };
    let example_args = args(&example.to_string_lossy());
    let example_args: Vec<&str> = example_args.iter().map(String::as_str).collect();
    // The running service picks up the demo points within a second.
    let deadline = Instant::now() + WAIT;
    let last = loop {
        let out = s.p.soilmon.command(&example_args).await?;
        let last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() || Instant::now() > deadline {
            break last;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    eprintln!("{last}");
    assert!(last.starts_with("ACCEPTED (HTTP 201)"), "{last}");
    assert!(last.contains("judgements:"), "{last}");
    assert!(last.contains("QC: samples 5"), "{last}");
    let out = s.p.soilmon.command(&example_args).await?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("already uploaded"), "{text}");
    // The same batch as an xlsx sheet: the same rows and content hash, so the same answer.
    let xlsx = repo_path("config/lab/example-batch.xlsx");
    let xlsx_args = args(&xlsx.to_string_lossy());
    let xlsx_args: Vec<&str> = xlsx_args.iter().map(String::as_str).collect();
    let out = s.p.soilmon.command(&xlsx_args).await?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("already uploaded"), "{text}");

    let bad = s.dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        batch_of(
            "BAD",
            &["S1,441781-T-0001,2026-11-20,0,20,6.2,Fe,1,mg/kg,true,0.07,M,sample,"],
        ),
    )?;
    let bad_args = args(&bad.to_string_lossy());
    let bad_args: Vec<&str> = bad_args.iter().map(String::as_str).collect();
    let out = s.p.soilmon.command(&bad_args).await?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("line 2 [metal] unknown_metal"), "{text}");
    Ok(())
}

/// A 100,000-row batch (80,000 samples, 16,000 duplicates, 4,000 blanks) is accepted
/// whole. Prints the elapsed time (`--nocapture`); no timing assertion.
#[tokio::test]
async fn hundred_thousand_row_batch_uploads() -> anyhow::Result<()> {
    let s = LabService::start(&[("SOILMON__HTTP__BODY_LIMIT_BYTES", "104857600")]).await?;
    let csv = big_batch("BIG-100K", 80_000);
    let rows = csv.lines().count() - 1;
    assert_eq!(rows, 100_000);
    let started = Instant::now();
    let (st, report) = s.upload(&csv).await?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "100k-row lab batch: {rows} rows, {} bytes, HTTP {st} in {secs:.2} s ({:.0} rows/s)",
        csv.len(),
        rows as f64 / secs
    );
    let log = s.p.soilmon.log();
    for line in log.lines().filter(|l| l.contains("\"lab batch")) {
        eprintln!("service log: {line}");
    }
    assert_eq!(
        st,
        201,
        "{}",
        &report.to_string()[..report.to_string().len().min(2000)]
    );
    assert_eq!(s.p.count("SELECT count(*) FROM lab_rows").await?, 100_000);
    assert_eq!(
        s.p.count("SELECT count(*) FROM readings_full").await?,
        80_000
    );
    // So large a batch leaves `samples` analysed before it is answered (autovacuum's passes
    // set `last_autoanalyze`, not `last_analyze`): the tier view is planned for the new lab
    // samples, not with statistics from before them.
    assert_eq!(
        s.p.count(
            "SELECT count(*) FROM pg_stat_user_tables
             WHERE relname = 'samples' AND last_analyze IS NOT NULL"
        )
        .await?,
        1,
        "samples not analysed after a batch of 80,000 field samples; log:\n{log}"
    );
    assert!(
        log.contains("samples analysed after a large lab batch"),
        "{log}"
    );
    Ok(())
}

/// `samples` field samples over the test points, one metal each, plus 20 % duplicates and
/// 5 % blanks; all values below screening.
fn big_batch(batch: &str, samples: usize) -> String {
    let mut out = String::with_capacity(samples * 140);
    out.push_str(HEADER);
    out.push('\n');
    let points = ["441781-T-0001", "441702-T-0001", "441781-T-0003"];
    let metals = [
        ("Pb", 20.0),
        ("Cd", 0.1),
        ("As", 5.0),
        ("Cu", 15.0),
        ("Ni", 12.0),
    ];
    for i in 0..samples {
        let (metal, base) = metals[i % metals.len()];
        let value = base * (1.0 + (i % 7) as f64 * 0.01);
        let point = points[i % points.len()];
        let day = 1 + (i / 5000) % 28;
        let minute = i % 1440;
        let when = format!("2026-10-{day:02} {:02}:{:02}", minute / 60, minute % 60);
        out.push_str(&format!(
            "{batch},LAB1,S{i:06},{point},{when},0,20,,{metal},{value:.3},mg/kg,true,0.05,HJ 803,sample,\n"
        ));
        if i % 5 == 0 {
            out.push_str(&format!(
                "{batch},LAB1,S{i:06}-LD,,,,,,{metal},{value:.3},mg/kg,true,0.05,HJ 803,lab_duplicate,S{i:06}\n"
            ));
        }
        if i % 20 == 0 {
            out.push_str(&format!(
                "{batch},LAB1,BLK{i:06},,,,,,{metal},0.01,mg/kg,true,0.05,HJ 803,blank,\n"
            ));
        }
    }
    out
}

/// An accepted batch file is archived verbatim in the hash chain, `soilmon verify` passes,
/// and an edit of one of its readings behind the trigger's back is reported.
#[tokio::test]
async fn accepted_batches_are_in_the_tamper_evident_chain() -> anyhow::Result<()> {
    let s = LabService::start(&[]).await?;
    let csv = clean_batch("B-ARCH");
    let (status, report) = s.upload(&csv).await?;
    assert_eq!(status, 201, "{report}");
    let db = s.p.db().await?;
    let raw: Vec<u8> = db
        .query_one(
            "SELECT raw FROM archive WHERE kind = 'lab_batch' AND ref = 'B-ARCH'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(raw, csv.as_bytes(), "the file is archived verbatim");
    let out = s.p.soilmon.command(&["verify"]).await?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    db.batch_execute(
        "SET session_replication_role = replica;
         UPDATE readings SET value_mgkg = 0.2
         WHERE metal = 3 AND sample_key IN (
             SELECT sample_key FROM readings_full WHERE source_id = 'B-ARCH');",
    )
    .await?;
    let out = s.p.soilmon.command(&["verify"]).await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "an edited lab reading must fail verification: {text}"
    );
    assert!(text.contains("B-ARCH"), "the broken entry is named: {text}");
    Ok(())
}

/// The rows of a batch being stored are new (its id was never accepted), so they go by binary
/// COPY straight into `lab_rows` and `readings`. Should they be stored after all (here the
/// accepted batch is marked rejected by hand), the `lab_rows` COPY's unique violation rolls
/// back to its savepoint and the rows go through `ON CONFLICT DO NOTHING`, and the samples
/// already stored keep their readings, which are not copied again: nothing is stored twice.
#[tokio::test]
async fn rows_already_stored_for_a_new_batch_fall_back_to_on_conflict() -> anyhow::Result<()> {
    let s = LabService::start(&[]).await?;
    let csv = clean_batch("B-AGAIN");
    let (st, report) = s.upload(&csv).await?;
    assert_eq!(st, 201, "{report}");
    s.p.db()
        .await?
        .execute(
            "UPDATE lab_batches SET status = 'rejected' WHERE batch_id = 'B-AGAIN'",
            &[],
        )
        .await?;
    let (st, again) = s.upload(&csv).await?;
    assert_eq!(st, 201, "{again}\n{}", s.p.soilmon.log());
    assert_eq!(again["by_judgement"], report["by_judgement"]);
    assert_eq!(s.p.count("SELECT count(*) FROM lab_rows").await?, 8);
    assert_eq!(
        s.p.count("SELECT count(*) FROM readings_full WHERE source_id = 'B-AGAIN'")
            .await?,
        3
    );
    let log = s.p.soilmon.log();
    assert!(
        log.contains("lab rows already stored for a new batch"),
        "log:\n{log}"
    );
    assert!(
        log.contains("readings already stored for a new message"),
        "log:\n{log}"
    );
    Ok(())
}

/// Every lab row belongs to a stored batch (schema version 7 checks it once per statement
/// instead of with a per-row foreign key): rows naming an unknown batch are refused, by COPY
/// as by INSERT, and a batch with rows can be neither deleted nor renamed.
#[tokio::test]
async fn lab_rows_need_their_batch() -> anyhow::Result<()> {
    let s = LabService::start(&[]).await?;
    let (st, report) = s.upload(&clean_batch("B-KEEP")).await?;
    assert_eq!(st, 201, "{report}");
    let db = s.p.db().await?;
    let copy_of = |batch: &str| {
        format!(
            "INSERT INTO lab_rows SELECT '{batch}', line, sample_id || '-x', point_id, sampled_at,
                    analysed_at, depth_top_cm, depth_bottom_cm, ph, metal, value_orig,
                    unit_orig, value_mgkg, detected, mdl_mgkg, method, qc_type, qc_ref, level
             FROM lab_rows WHERE batch_id = 'B-KEEP'"
        )
    };
    let refused = db.execute(&copy_of("B-NOWHERE"), &[]).await;
    let code = refused.as_ref().err().and_then(|e| e.code().cloned());
    assert_eq!(
        code,
        Some(tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION),
        "{refused:?}"
    );
    // The same rows under a stored batch id go in.
    assert_eq!(db.execute(&copy_of("B-KEEP"), &[]).await?, 8);

    // COPY is checked too.
    let sink = db
        .copy_in(
            "COPY lab_rows (batch_id, line, sample_id, metal, value_orig, unit_orig,
                            value_mgkg, detected, qc_type) FROM STDIN BINARY",
        )
        .await?;
    use tokio_postgres::types::Type;
    let types = [
        Type::TEXT,
        Type::INT4,
        Type::TEXT,
        Type::TEXT,
        Type::FLOAT8,
        Type::TEXT,
        Type::FLOAT8,
        Type::BOOL,
        Type::TEXT,
    ];
    let writer = tokio_postgres::binary_copy::BinaryCopyInWriter::new(sink, &types);
    futures_util::pin_mut!(writer);
    writer
        .as_mut()
        .write(&[
            &"B-NOWHERE",
            &1i32,
            &"S-COPY",
            &"Pb",
            &1.0f64,
            &"mg/kg",
            &1.0f64,
            &true,
            &"sample",
        ])
        .await?;
    let copied = writer.finish().await;
    let code = copied.as_ref().err().and_then(|e| e.code().cloned());
    assert_eq!(
        code,
        Some(tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION),
        "{copied:?}"
    );

    for sql in [
        "DELETE FROM lab_batches WHERE batch_id = 'B-KEEP'",
        "UPDATE lab_batches SET batch_id = 'B-MOVED' WHERE batch_id = 'B-KEEP'",
    ] {
        let r = db.execute(sql, &[]).await;
        let code = r.as_ref().err().and_then(|e| e.code().cloned());
        assert_eq!(
            code,
            Some(tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION),
            "{sql}: {r:?}"
        );
    }
    assert_eq!(
        s.p.count("SELECT count(*) FROM lab_batches WHERE batch_id = 'B-KEEP'")
            .await?,
        1
    );
    Ok(())
}
