//! HTTP API roles end to end: each role reaches exactly its endpoints, a bureau sees only its
//! counties (another county's point is a 404 identical to a nonexistent one), the
//! per-identity rate limit, and tokens added or revoked with `soilmon tokens` take effect
//! without a restart.

mod common;

use std::time::Duration;

use common::api::{ApiService, ADMIN, BUREAU_CITY, BUREAU_YC, LAB};
use common::pipeline::sample;
use common::wait_until;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// Publishes one exceedance at a 441781 point and one at the 441702 point, and waits until
/// both alerts and incidents are stored.
async fn two_county_exceedances(s: &ApiService) -> anyhow::Result<()> {
    s.p.publish(vec![
        // Paddy, pH 6.2: Cd screening 0.4.
        sample(
            "st01",
            "m-1",
            "441781-T-0001",
            "2026-11-28T09:30:00+08:00",
            &[("Cd", 0.45), ("Pb", 50.0)],
        ),
        // Dry land, pH 7.0: Cd screening 0.3.
        sample(
            "st02",
            "m-2",
            "441702-T-0001",
            "2026-11-28T10:00:00+08:00",
            &[("Cd", 0.9)],
        ),
    ])
    .await?;
    s.p.wait_count("SELECT count(*) FROM outbox WHERE kind = 'alert'", 2, WAIT)
        .await?;
    s.p.wait_count("SELECT count(*) FROM incidents", 2, WAIT)
        .await?;
    Ok(())
}

fn counties(body: &Value, list: &str) -> Vec<String> {
    let mut c: Vec<String> = body[list]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v["county_code"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default();
    c.sort();
    c.dedup();
    c
}

#[tokio::test]
async fn each_role_reaches_exactly_its_endpoints_and_its_counties() -> anyhow::Result<()> {
    let s = ApiService::start(&[]).await?;
    two_county_exceedances(&s).await?;

    // --- county scope -------------------------------------------------------------------
    let yc = Some(s.token(BUREAU_YC));
    let a = s.get("/v1/alerts", yc).await?;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(counties(&a.json(), "alerts"), vec!["441781"], "{}", a.text);
    let a = s.get("/v1/incidents?open=true", yc).await?;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        counties(&a.json(), "incidents"),
        vec!["441781"],
        "{}",
        a.text
    );
    for who in [BUREAU_CITY, ADMIN] {
        let t = Some(s.token(who));
        let a = s.get("/v1/alerts", t).await?;
        assert_eq!(counties(&a.json(), "alerts"), vec!["441702", "441781"]);
        let a = s.get("/v1/incidents", t).await?;
        assert_eq!(counties(&a.json(), "incidents"), vec!["441702", "441781"]);
        let a = s.get("/v1/points/441702-T-0001/readings", t).await?;
        assert_eq!(a.status, 200, "{who}: {}", a.text);
        assert_eq!(a.json()["readings"][0]["metal"], "Cd");
    }
    let own = s
        .get("/v1/points/441781-T-0001/readings?limit=1", yc)
        .await?;
    assert_eq!(own.status, 200, "{}", own.text);
    assert_eq!(own.json()["count"], 1);
    let other = s.get("/v1/points/441702-T-0001/readings", yc).await?;
    let missing = s.get("/v1/points/NO-SUCH-POINT/readings", yc).await?;
    assert_eq!(other.status, 404, "another county's point is not found");
    assert_eq!(missing.status, 404);
    assert_eq!(other.text, missing.text, "no existence leak");

    // Parameters.
    let a = s.get("/v1/alerts?since=2999-01-01T00:00:00Z", yc).await?;
    assert_eq!(a.json()["count"], 0, "{}", a.text);
    assert_eq!(s.get("/v1/alerts?since=yesterday", yc).await?.status, 400);
    assert_eq!(s.get("/v1/incidents?limit=0", yc).await?.status, 400);
    assert_eq!(s.get("/v1/incidents?open=maybe", yc).await?.status, 400);

    // --- the role × endpoint matrix -------------------------------------------------------
    // (method, path, roles allowed); allowed → the status of a successful call.
    let matrix: &[(&str, &str, &[&str], u16)] = &[
        // An empty CSV is unreadable: 422 for a role that may upload.
        ("POST", "/v1/lab/batches", &[LAB], 422),
        ("GET", "/v1/lab/batches/NO-SUCH-BATCH", &[LAB, ADMIN], 404),
        ("GET", "/v1/alerts", &[BUREAU_YC, BUREAU_CITY, ADMIN], 200),
        (
            "GET",
            "/v1/incidents",
            &[BUREAU_YC, BUREAU_CITY, ADMIN],
            200,
        ),
        (
            "GET",
            "/v1/points/441781-T-0001/readings",
            &[BUREAU_YC, BUREAU_CITY, ADMIN],
            200,
        ),
        ("GET", "/v1/points", &[ADMIN], 200),
        ("GET", "/v1/stations", &[ADMIN], 200),
        ("GET", "/v1/bureaus", &[ADMIN], 200),
    ];
    for (method, path, allowed, ok) in matrix {
        for who in [LAB, BUREAU_YC, BUREAU_CITY, ADMIN] {
            let a = s
                .request(method, path, Some(s.token(who)), Some(""))
                .await?;
            let want = if allowed.contains(&who) { *ok } else { 403 };
            assert_eq!(a.status, want, "{who} {method} {path}: {}", a.text);
        }
        let a = s.request(method, path, None, Some("")).await?;
        assert_eq!(a.status, 401, "no token {method} {path}");
        let a = s
            .request(method, path, Some("not-a-token"), Some(""))
            .await?;
        assert_eq!(a.status, 401, "bad token {method} {path}");
    }
    // Health, readiness and metrics stay open.
    assert_eq!(s.get("/healthz", None).await?.status, 200);

    // Admin reads.
    let pts = s.get("/v1/points", Some(s.token(ADMIN))).await?.json();
    assert_eq!(pts["count"], 4, "{pts}");
    assert_eq!(pts["points"][0]["id"], "441702-T-0001", "{pts}");

    // Every request is logged with its identity.
    let log = s.p.soilmon.log();
    assert!(
        log.contains("bureau-441781") && log.contains("\"status\":404"),
        "access log missing:\n{}",
        common::pipeline::tail(&log, 3000)
    );
    Ok(())
}

#[tokio::test]
async fn rate_limit_and_token_changes_without_restart() -> anyhow::Result<()> {
    let s = ApiService::start(&[("SOILMON__HTTP__RATE_LIMIT_PER_MINUTE", "5")]).await?;
    let admin = Some(s.token(ADMIN));
    for i in 0..5 {
        let a = s.get("/v1/points", admin).await?;
        assert_eq!(a.status, 200, "request {i}: {}", a.text);
    }
    let a = s.get("/v1/points", admin).await?;
    assert_eq!(a.status, 429, "{}", a.text);
    let wait: u64 = a.retry_after.as_deref().unwrap_or("").parse()?;
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    // Per identity: another token is not affected.
    assert_eq!(
        s.get("/v1/alerts", Some(s.token(BUREAU_CITY)))
            .await?
            .status,
        200
    );

    // Revoke: refused (401) without a restart.
    let yc = s.token(BUREAU_YC).to_string();
    assert_eq!(s.get("/v1/alerts", Some(&yc)).await?.status, 200);
    let out =
        s.p.soilmon
            .command(&["tokens", "revoke", BUREAU_YC])
            .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("revoked token refused", WAIT, || async {
        Ok(s.get("/v1/alerts", Some(&yc)).await?.status == 401)
    })
    .await?;
    let again =
        s.p.soilmon
            .command(&["tokens", "revoke", BUREAU_YC])
            .await?;
    assert!(!again.status.success(), "a second revoke is refused");

    // Add: usable without a restart; duplicates and a bureau without counties are refused.
    let out =
        s.p.soilmon
            .command(&[
                "tokens", "add", "jc", "--role", "bureau", "--county", "441702",
            ])
            .await?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(token.len() >= 43, "{stdout}");
    wait_until("new token accepted", WAIT, || async {
        Ok(s.get("/v1/alerts", Some(&token)).await?.status == 200)
    })
    .await?;
    assert_eq!(
        s.get("/v1/points/441781-T-0001/readings", Some(&token))
            .await?
            .status,
        404
    );
    let dup =
        s.p.soilmon
            .command(&["tokens", "add", "jc", "--role", "admin"])
            .await?;
    assert!(!dup.status.success());
    let nocounty =
        s.p.soilmon
            .command(&["tokens", "add", "x", "--role", "bureau"])
            .await?;
    assert!(!nocounty.status.success());

    // List: names, roles, counties; never a token or hash.
    let out = s.p.soilmon.command(&["tokens", "list"]).await?;
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(list.contains("jc\tbureau\tcounties 441702"), "{list}");
    assert!(list.contains("bureau-city\tbureau\tall counties"), "{list}");
    assert!(!list.contains(BUREAU_YC), "{list}");
    assert!(!list.contains(&token), "{list}");
    let file = std::fs::read_to_string(&s.tokens_file)?;
    assert!(!file.contains(&token), "only the hash is stored");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&s.tokens_file)?.permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "rewritten with mode 0600");
    }
    Ok(())
}

/// The console's map reads the soil tiers from the snapshot `soilmon run` refreshes (schema
/// 21; every second in tests): a sample above the intervention value turns its point
/// `strict_control` on the map once the snapshot is refreshed, and the refresh records the
/// newest sample it saw.
#[tokio::test]
async fn the_map_shows_tiers_from_the_refreshed_snapshot() -> anyhow::Result<()> {
    let s = ApiService::start(&[]).await?;
    // Paddy, pH 6.2: Cd intervention 2.0.
    s.p.publish(vec![sample(
        "st01",
        "tier-1",
        "441781-T-0001",
        "2026-11-28T09:30:00+08:00",
        &[("Cd", 2.5)],
    )])
    .await?;
    s.p.wait_count("SELECT count(*) FROM readings", 1, WAIT)
        .await?;
    let tier = || async {
        let map = s
            .get("/console/data/map", Some(s.token(ADMIN)))
            .await?
            .json();
        let point = map
            .as_array()
            .and_then(|a| a.iter().find(|p| p["point_id"] == "441781-T-0001"))
            .cloned()
            .unwrap_or(Value::Null);
        anyhow::Ok(point["tier"].as_str().unwrap_or("").to_string())
    };
    wait_until("the map shows strict_control", WAIT, || async {
        Ok(tier().await? == "strict_control")
    })
    .await?;
    let seen =
        s.p.count(
            "SELECT count(*) FROM point_soil_tiers_refreshed r
             WHERE r.sample_key = (SELECT max(sample_key) FROM samples)",
        )
        .await?;
    assert_eq!(seen, 1, "the refresh records the newest sample key");
    Ok(())
}
