//! The web console (`/console/…`) and the public disclosure page (`/public/…`), served by
//! the same axum server as the API.
//!
//! - **Rendering**: server-side HTML from [minijinja] templates embedded in the binary
//!   (`templates/*.html`, auto-escaped: every user-supplied text — point names, notes,
//!   payloads — is escaped), plus small scripts of our own (`static/*.js`, also embedded)
//!   that fetch JSON and build the DOM with `textContent`. The browser libraries (Leaflet,
//!   Apache ECharts, the county outlines) come from `web/node_modules`, installed from the
//!   npm registry by `deploy/local/assets.sh` and served from `console.assets_dir`
//!   ([`assets`]); nothing comes from a CDN.
//! - **Sign-in** ([`session`]): an API token is exchanged for a session cookie (HttpOnly,
//!   SameSite=Strict, Secure when `console.secure_cookie`); the session keeps only the
//!   SHA-256 of the token, so revoking the token ends it. Every state-changing request of a
//!   session carries its CSRF token (a form field or the `X-CSRF-Token` header); the API's
//!   own routes accept a session too (the lab page posts to `POST /v1/lab/batches`).
//! - **Headers**: every page and asset gets a Content-Security-Policy without inline scripts
//!   (`script-src 'self'`), `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`
//!   and `frame-ancestors 'none'`.
//! - **Scope**: pages take a [`Viewer<R>`] (the role set `R` of [`super::caller`]); data of
//!   another county is read through the caller's [`crate::store::queries::Scope`], so an
//!   incident or point of another county answers the same 404 as a missing one, and a role
//!   not allowed gets 403.
//! - **Language**: zh-CN by default (`console.default_lang`), English switchable
//!   (`/console/lang/{zh-CN|en}`, a cookie); texts in [`i18n`] (`messages.toml`).
//!
//! | module | pages |
//! |---|---|
//! | [`pages`] | bureau map, feed, incident (chart, workflow), point (samples, CSV/xlsx), lab upload, admin lists (points with their import, access) |
//! | [`admin`] | quarantine browser (by reason, station, time; the payload escaped) and replay of selected messages |
//! | [`subscriptions`] | alert subscriptions (bureaus: their own; admins: all): list with queues, add, test, pause, resume, remove, dead letters and retry |
//! | [`data`] | the JSON the pages' scripts read (map points, popup, feed, series) |
//! | [`public`] | the public disclosure page and its CSV / xlsx / GeoJSON downloads |
//! | [`export`] | CSV (UTF-8 BOM), xlsx and GeoJSON encoders |

pub mod admin;
pub mod assets;
pub mod cookies;
pub mod data;
pub mod export;
pub mod i18n;
pub mod pages;
pub mod public;
pub mod session;
pub mod subscriptions;

use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::Environment;
use serde::Serialize;

use super::auth::Principal;
use super::caller::{Caller, Roles};
use super::AppState;
use i18n::Lang;

/// The console's routes (merged into the API router, behind the same gate), with the
/// security headers on every response.
pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/console", get(pages::home))
        .route(
            "/console/login",
            get(session::login_page).post(session::login),
        )
        .route("/console/logout", post(session::logout))
        .route("/console/lang/{lang}", get(session::set_lang))
        .route("/console/map", get(pages::map))
        .route("/console/feed", get(pages::feed))
        .route("/console/incidents/{id}", get(pages::incident))
        .route("/console/incidents/{id}/actions", post(pages::act))
        .route("/console/points/{id}", get(pages::point))
        .route("/console/points/{id}/samples.csv", get(pages::samples_csv))
        .route(
            "/console/points/{id}/samples.xlsx",
            get(pages::samples_xlsx),
        )
        .route("/console/lab", get(pages::lab))
        .route("/console/admin/points", get(pages::admin_points))
        .route("/console/admin/access", get(pages::admin_access))
        .route("/console/admin/quarantine", get(admin::quarantine_list))
        .route(
            "/console/admin/quarantine/{id}",
            get(admin::quarantine_entry),
        )
        .route(
            "/console/admin/quarantine/replay",
            post(admin::quarantine_replay),
        )
        .route(
            "/console/subscriptions",
            get(subscriptions::page).post(subscriptions::add),
        )
        .route(
            "/console/subscriptions/{name}/{action}",
            post(subscriptions::act),
        )
        .route("/console/deliveries/retry", post(subscriptions::retry))
        .route("/console/data/map", get(data::map_points))
        .route("/console/data/points/{id}/latest", get(data::latest))
        .route("/console/data/points/{id}/series", get(data::series))
        .route("/console/data/feed", get(data::feed))
        .route("/console/assets/{*file}", get(assets::serve))
        .route("/public", get(public::page_city))
        .route("/public/{county}", get(public::page_county))
        .route("/public/{scope}/points.{format}", get(public::download))
        .route(
            "/public/{scope}/enterprises.{format}",
            get(public::enterprises_download),
        )
        .layer(axum::middleware::from_fn_with_state(state, with_headers))
}

/// Adds [`secure_headers`] to a console, public or asset response.
async fn with_headers(
    axum::extract::State(st): axum::extract::State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut r = next.run(req).await;
    secure_headers(r.headers_mut(), &st.settings.console.tiles_url);
    r
}

/// Security headers on every console, public and asset response.
pub fn secure_headers(headers: &mut HeaderMap, tiles_url: &str) {
    let tiles = tile_origin(tiles_url);
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data: {tiles}; connect-src 'self'; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// `scheme://host[:port]` of a tile URL template (empty when none or unreadable).
fn tile_origin(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return String::new();
    };
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(['{', '}', ' ', ';', '\'']) {
        // A `{s}` subdomain template: allow the scheme's hosts of that domain.
        let domain = host.split_once('.').map_or("", |(_, d)| d);
        if domain.is_empty() || domain.contains(['{', '}', ' ', ';', '\'']) {
            return String::new();
        }
        return format!("{scheme}://*.{domain}");
    }
    format!("{scheme}://{host}")
}

/// The template environment (templates embedded at build time, HTML auto-escaping on).
fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, text) in TEMPLATES {
            // The templates are part of the binary; a syntax error is caught by the unit
            // test below, never by a visitor.
            if let Err(e) = env.add_template(name, text) {
                tracing::error!(template = name, error = %e, "console: bad template");
            }
        }
        env
    })
}

/// Every template, by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("error.html", include_str!("templates/error.html")),
    ("map.html", include_str!("templates/map.html")),
    ("feed.html", include_str!("templates/feed.html")),
    ("incident.html", include_str!("templates/incident.html")),
    ("point.html", include_str!("templates/point.html")),
    ("lab.html", include_str!("templates/lab.html")),
    (
        "admin_points.html",
        include_str!("templates/admin_points.html"),
    ),
    (
        "admin_access.html",
        include_str!("templates/admin_access.html"),
    ),
    ("public.html", include_str!("templates/public.html")),
    (
        "admin_quarantine.html",
        include_str!("templates/admin_quarantine.html"),
    ),
    (
        "admin_quarantine_entry.html",
        include_str!("templates/admin_quarantine_entry.html"),
    ),
    (
        "subscriptions.html",
        include_str!("templates/subscriptions.html"),
    ),
];

/// What every page's template receives besides its own data.
#[derive(Serialize)]
struct Frame<'a, T: Serialize> {
    /// The page's texts in the visitor's language.
    t: &'static i18n::Texts,
    /// `zh-CN` or `en`.
    lang: &'static str,
    /// The signed-in user's name and role (none on public pages).
    user: Option<User<'a>>,
    /// The session's CSRF token (forms carry it).
    csrf: &'a str,
    /// The page's own data.
    page: T,
}

#[derive(Serialize)]
struct User<'a> {
    name: &'a str,
    role: &'a str,
}

/// Renders `template` with `page` for `viewer` (or a public visitor).
fn render<T: Serialize>(
    template: &str,
    lang: Lang,
    viewer: Option<(&Principal, &str)>,
    page: T,
) -> Response {
    let frame = Frame {
        t: i18n::texts(lang),
        lang: lang.as_str(),
        user: viewer.map(|(p, _)| User {
            name: &p.name,
            role: p.role.as_str(),
        }),
        csrf: viewer.map_or("", |(_, c)| c),
        page,
    };
    let html = templates()
        .get_template(template)
        .and_then(|t| t.render(&frame));
    match html {
        Ok(h) => Html(h).into_response(),
        Err(e) => {
            tracing::error!(template, error = %e, "console: rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "rendering failed").into_response()
        }
    }
}

/// The CSRF token of the session that authenticated a request (absent for bearer tokens,
/// which a browser never sends by itself).
#[derive(Debug, Clone)]
pub struct SessionCsrf(pub String);

/// A signed-in console user of one of the roles `R`, with their language and CSRF token.
pub struct Viewer<R> {
    /// The principal (name, role, county scope).
    pub caller: Caller<R>,
    /// The session's CSRF token; `None` when the request came with a bearer token.
    pub csrf: Option<String>,
    /// The visitor's language.
    pub lang: Lang,
    roles: PhantomData<fn() -> R>,
}

impl<R: Roles> Viewer<R> {
    /// Renders a page for this viewer.
    pub fn render<T: Serialize>(&self, template: &str, page: T) -> Response {
        render(
            template,
            self.lang,
            Some((&self.caller, self.csrf.as_deref().unwrap_or(""))),
            page,
        )
    }

    /// Whether a state-changing request carries the session's CSRF token (`sent`), or came
    /// with a bearer token (no session: nothing a browser sends on its own).
    pub fn csrf_ok(&self, sent: &str) -> bool {
        match &self.csrf {
            None => true,
            Some(c) => session::same_secret(c, sent),
        }
    }

    /// Checks a posted form's `csrf` field against the session ([`Viewer::csrf_ok`]); a
    /// missing or wrong token is logged and answered with the 403 page.
    pub fn check_form(&self, fields: &[(String, String)]) -> Result<(), PageError> {
        let sent = fields
            .iter()
            .find(|(k, _)| k == "csrf")
            .map_or("", |(_, val)| val.as_str());
        if self.csrf_ok(sent) {
            Ok(())
        } else {
            tracing::warn!(identity = %self.caller.name, "console: form without a valid CSRF token");
            Err(PageError::Csrf(self.lang))
        }
    }
}

/// The ticked `ids` of a posted form: at least one, each a number, else the 400 page.
pub fn form_ids(lang: Lang, fields: &[(String, String)]) -> Result<Vec<i64>, PageError> {
    let ids = fields
        .iter()
        .filter(|(k, _)| k == "ids")
        .map(|(_, val)| val.parse::<i64>())
        .collect::<Result<Vec<i64>, _>>()
        .map_err(|_| PageError::BadRequest(lang, "ids".into()))?;
    if ids.is_empty() {
        return Err(PageError::BadRequest(lang, "ids".into()));
    }
    Ok(ids)
}

impl<S: Send + Sync, R: Roles> FromRequestParts<S> for Viewer<R> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, PageError> {
        let lang = i18n::lang_of(&parts.headers);
        let who = parts.extensions.get::<Principal>().cloned();
        if who.is_none() {
            return Err(PageError::SignIn);
        }
        let caller = Caller::<R>::check(who).map_err(|_| PageError::Forbidden(lang))?;
        Ok(Viewer {
            caller,
            csrf: parts.extensions.get::<SessionCsrf>().map(|c| c.0.clone()),
            lang,
            roles: PhantomData,
        })
    }
}

/// Why a page cannot be shown: each renders as an HTML page with its status.
#[derive(Debug)]
pub enum PageError {
    /// Not signed in: redirect to the sign-in page.
    SignIn,
    /// Signed in with a role the page does not allow (403).
    Forbidden(Lang),
    /// No such thing in the viewer's counties (404, the same for missing and elsewhere).
    NotFound(Lang),
    /// A state-changing request without the session's CSRF token (403).
    Csrf(Lang),
    /// A refused input, with its reason code (400).
    BadRequest(Lang, String),
    /// The database cannot answer now (503).
    Unavailable(Lang),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, lang, code) = match self {
            PageError::SignIn => return Redirect::to("/console/login").into_response(),
            PageError::Forbidden(l) => (StatusCode::FORBIDDEN, l, "forbidden".to_string()),
            PageError::NotFound(l) => (StatusCode::NOT_FOUND, l, "not_found".to_string()),
            PageError::Csrf(l) => (StatusCode::FORBIDDEN, l, "csrf".to_string()),
            PageError::BadRequest(l, code) => (StatusCode::BAD_REQUEST, l, code),
            PageError::Unavailable(l) => (
                StatusCode::SERVICE_UNAVAILABLE,
                l,
                "unavailable".to_string(),
            ),
        };
        #[derive(Serialize)]
        struct ErrorPage {
            status: u16,
            code: String,
        }
        let page = ErrorPage {
            status: status.as_u16(),
            code,
        };
        let mut r = render("error.html", lang, None, page);
        *r.status_mut() = status;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let mut env = Environment::new();
        for (name, text) in TEMPLATES {
            env.add_template(name, text)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let t = env.get_template("error.html").map(|_| ());
        assert!(t.is_ok());
    }

    #[test]
    fn user_text_is_escaped() {
        let frame = Frame {
            t: i18n::texts(Lang::En),
            lang: "en",
            user: None,
            csrf: "",
            page: serde_json::json!({"status": 404, "code": "\"><img src=x onerror=alert(1)><script>"}),
        };
        let html = templates()
            .get_template("error.html")
            .and_then(|t| t.render(&frame))
            .unwrap_or_default();
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<img src=x"), "{html}");
    }

    #[test]
    fn tile_origins_for_the_policy() {
        assert_eq!(
            tile_origin("https://tiles.example.org/{z}/{x}/{y}.png"),
            "https://tiles.example.org"
        );
        assert_eq!(
            tile_origin("https://{s}.tile.example.org/{z}/{x}/{y}.png"),
            "https://*.tile.example.org"
        );
        assert_eq!(tile_origin(""), "");
    }
}
