//! The admin JSON API for the registry, broker identities and tokens, end to end: only
//! `admin` reaches it (401 without a token, 403 for lab and bureau), points import with the
//! error's line, search, stations and bureaus added and revoked, and a token made over the
//! API that works at once and stops working when revoked.

mod common;

use std::time::Duration;

use common::api::{ApiService, ADMIN, BUREAU_CITY, LAB};
use common::wait_until;
use serde_json::Value;

const POINTS_HEADER: &str = "point_id,name,county_code,lon,lat,point_type,land_use,ph\n";

#[tokio::test]
async fn admins_manage_points_identities_and_tokens() -> anyhow::Result<()> {
    let s = ApiService::start(&[]).await?;
    let admin = Some(s.token(ADMIN));

    // Roles: every management route is admin-only.
    let routes: [(&str, &str, &str); 9] = [
        ("POST", "/v1/points/import", POINTS_HEADER),
        ("GET", "/v1/points?q=x", ""),
        ("POST", "/v1/stations", r#"{"id":"st-x"}"#),
        ("DELETE", "/v1/stations/st-x", ""),
        ("POST", "/v1/bureaus", r#"{"name":"b-x","all":true}"#),
        ("DELETE", "/v1/bureaus/b-x", ""),
        ("GET", "/v1/tokens", ""),
        ("POST", "/v1/tokens", r#"{"name":"t-x","role":"lab"}"#),
        ("DELETE", "/v1/tokens/t-x", ""),
    ];
    for (method, path, body) in routes {
        for who in [LAB, BUREAU_CITY] {
            let a = s
                .request(method, path, Some(s.token(who)), Some(body))
                .await?;
            assert_eq!(a.status, 403, "{who} {method} {path}: {}", a.text);
        }
        let a = s.request(method, path, None, Some(body)).await?;
        assert_eq!(a.status, 401, "{method} {path}: {}", a.text);
    }

    // Points: a bad file is refused with its line, nothing imported; a good one imported.
    let bad = format!(
        "{POINTS_HEADER}441781-N-0001,New paddy,441781,111.8,22.2,risk,paddy,6.0\n\
         441781-N-0002,Bad,999999,111.8,22.2,risk,paddy,6.0\n"
    );
    let a = s
        .request("POST", "/v1/points/import", admin, Some(&bad))
        .await?;
    assert_eq!(a.status, 422, "{}", a.text);
    let e = &a.json()["errors"][0];
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_str()),
        (Some(3), Some("county_code")),
        "{}",
        a.text
    );
    let good =
        format!("{POINTS_HEADER}441781-N-0001,New paddy 新稻田,441781,111.8,22.2,risk,paddy,6.0\n");
    let a = s
        .request("POST", "/v1/points/import", admin, Some(&good))
        .await?;
    assert_eq!(
        (a.status, a.json()["imported"].as_u64()),
        (200, Some(1)),
        "{}",
        a.text
    );
    let a = s.get("/v1/points?q=%E6%96%B0%E7%A8%BB", admin).await?;
    assert_eq!(a.json()["count"], 1, "search by name: {}", a.text);
    assert_eq!(a.json()["points"][0]["id"], "441781-N-0001", "{}", a.text);
    let a = s.get("/v1/points?q=441702", admin).await?;
    assert_eq!(a.json()["count"], 1, "search by county: {}", a.text);
    assert_eq!(s.get("/v1/points", admin).await?.json()["count"], 5);

    // Stations and bureaus: added (the password once), listed, revoked, revoked again 404.
    let a = s
        .request("POST", "/v1/stations", admin, Some(r#"{"id":"st77"}"#))
        .await?;
    assert_eq!(a.status, 201, "{}", a.text);
    assert!(
        a.json()["password"].as_str().is_some_and(|p| p.len() >= 20),
        "{}",
        a.text
    );
    let a = s
        .request("POST", "/v1/stations", admin, Some(r#"{"id":"st77"}"#))
        .await?;
    assert_eq!(a.status, 400, "a name in use: {}", a.text);
    let a = s
        .request("POST", "/v1/stations", admin, Some(r#"{"id":"bad name"}"#))
        .await?;
    assert_eq!(a.status, 400, "{}", a.text);
    let a = s
        .request(
            "POST",
            "/v1/bureaus",
            admin,
            Some(r#"{"name":"yc-epb","counties":["441781"]}"#),
        )
        .await?;
    assert_eq!(a.status, 201, "{}", a.text);
    let a = s
        .request(
            "POST",
            "/v1/bureaus",
            admin,
            Some(r#"{"name":"xx-epb","counties":["999999"]}"#),
        )
        .await?;
    assert_eq!(a.status, 400, "unknown county: {}", a.text);
    let listed = s.get("/v1/bureaus", admin).await?.json();
    assert_eq!(listed["bureaus"][0]["counties"][0], "441781", "{listed}");
    let a = s
        .request("DELETE", "/v1/stations/st77", admin, None)
        .await?;
    assert_eq!(a.status, 200, "{}", a.text);
    let stations = s.get("/v1/stations", admin).await?.json();
    assert!(
        stations["stations"][0]["revoked_at"].is_string(),
        "{stations}"
    );
    let a = s
        .request("DELETE", "/v1/stations/st77", admin, None)
        .await?;
    assert_eq!(a.status, 404, "{}", a.text);

    // Tokens: one made over the API works within the reload interval, then is revoked.
    let a = s
        .request(
            "POST",
            "/v1/tokens",
            admin,
            Some(r#"{"name":"lab9","role":"lab"}"#),
        )
        .await?;
    assert_eq!(a.status, 201, "{}", a.text);
    let token = a.json()["token"].as_str().unwrap_or("").to_string();
    let a = s
        .request(
            "POST",
            "/v1/tokens",
            admin,
            Some(r#"{"name":"b9","role":"bureau"}"#),
        )
        .await?;
    assert_eq!(a.status, 400, "a bureau token needs counties: {}", a.text);
    let names: Vec<String> = s.get("/v1/tokens", admin).await?.json()["tokens"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|t| t["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    assert!(names.contains(&"lab9".to_string()), "{names:?}");
    let probe = "/v1/lab/batches/none";
    wait_until("new token accepted", Duration::from_secs(10), || async {
        Ok(s.get(probe, Some(&token)).await?.status == 404)
    })
    .await?;
    let a = s.request("DELETE", "/v1/tokens/lab9", admin, None).await?;
    assert_eq!(a.status, 200, "{}", a.text);
    wait_until("revoked token refused", Duration::from_secs(10), || async {
        Ok(s.get(probe, Some(&token)).await?.status == 401)
    })
    .await?;
    let a: Value = s
        .request("DELETE", "/v1/tokens/lab9", admin, None)
        .await?
        .json();
    assert_eq!(a["error"], "no such token");
    Ok(())
}

/// The OpenAPI document against the running server: every documented route answers (none
/// gets the router's own 404 or 405), and on a documented path every method the document
/// does not list is refused with 405, so the server serves nothing undocumented there.
#[tokio::test]
async fn the_openapi_document_matches_the_served_routes() -> anyhow::Result<()> {
    let s = ApiService::start(&[]).await?;
    let admin = Some(s.token(ADMIN));
    let a = s.get("/v1/openapi.json", None).await?;
    assert_eq!(a.status, 200, "{}", a.text);
    let doc = a.json();
    assert_eq!(doc["openapi"], "3.1.0", "{}", a.text);
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    assert!(paths.len() >= 20, "{} paths", paths.len());

    // The router's own 404 (no route) has an empty body; a handler's 404 is an
    // `{"error": …}` (no such point, token, …). Check that the two can be told apart.
    let none = s.get("/v1/no-such-route", admin).await?;
    assert_eq!(
        (none.status, none.json()),
        (404, Value::Null),
        "{}",
        none.text
    );

    let mut checked = 0;
    for (path, item) in &paths {
        let concrete = path
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    "x-openapi"
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let methods = item.as_object().cloned().unwrap_or_default();
        for method in ["get", "post", "delete"] {
            let upper = method.to_uppercase();
            let a = s.request(&upper, &concrete, admin, Some("")).await?;
            if methods.contains_key(method) {
                assert_ne!(a.status, 405, "{upper} {path} is documented: {}", a.text);
                let routed = a.status != 404 || a.json()["error"].is_string();
                assert!(routed, "{upper} {path} is documented but not served");
                checked += 1;
            } else {
                assert_eq!(a.status, 405, "{upper} {path} is served but not documented");
            }
        }
    }
    assert!(checked >= 27, "{checked} operations checked");
    Ok(())
}
