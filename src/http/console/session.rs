//! Console sign-in: an API token exchanged for a session cookie, CSRF tokens, logout, the
//! language switch.
//!
//! - `GET /console/login` sets a short-lived `soilmon_login` cookie and puts the same random
//!   value in the form (double submit), so a foreign page cannot sign a browser in.
//! - `POST /console/login` checks the token like a bearer token; a valid one opens a session
//!   (`console_sessions`: SHA-256 of the cookie value, SHA-256 of the token, CSRF token,
//!   expiry after `console.session_hours`) and sets `soilmon_session` (HttpOnly,
//!   SameSite=Strict, Path=/, Secure when `console.secure_cookie`).
//! - [`resolve`] (called by the gate for requests without a bearer token) turns the cookie
//!   back into the token's principal, as long as the token is still in the tokens file.
//! - `POST /console/logout` (CSRF-checked) deletes the session and the cookie.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::cookies::cookie;
use super::i18n::{self, Lang, LANG_COOKIE};
use super::{render, PageError, SessionCsrf};
use crate::http::auth::{self, Principal, Role};
use crate::http::AppState;
use crate::store;
use crate::store::console::Session;

/// The session cookie.
pub const SESSION_COOKIE: &str = "soilmon_session";
/// The sign-in form's double-submit cookie.
pub const LOGIN_COOKIE: &str = "soilmon_login";
/// The header a script sends the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Compares two secrets without an early exit on the first differing byte.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The principal and CSRF token of the request's session cookie, if the session is live
/// and its token still valid. A database failure counts as no session (the page then asks
/// to sign in; nothing is granted).
pub async fn resolve(st: &AppState, headers: &HeaderMap) -> Option<(Principal, SessionCsrf)> {
    let id = cookie(headers, SESSION_COOKIE)?;
    let client = st.pool.get().await.ok()?;
    let s = store::console::session(&client, &sha256_hex(id))
        .await
        .ok()??;
    let digest: [u8; 32] = hex::decode(&s.token_sha256).ok()?.try_into().ok()?;
    let p = st.tokens.check_digest(&digest)?;
    Some((p, SessionCsrf(s.csrf)))
}

/// A `Set-Cookie` value with the console's attributes.
fn set_cookie(st: &AppState, name: &str, value: &str, max_age_secs: u64) -> HeaderValue {
    let secure = if st.settings.console.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    let v = format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    );
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("x=; Max-Age=0"))
}

#[derive(Serialize)]
struct LoginPage {
    login_csrf: String,
    failed: bool,
}

/// `GET /console/login`: the sign-in form.
pub async fn login_page(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    login_form(&st, i18n::lang_of(&headers), false)
}

fn login_form(st: &AppState, lang: Lang, failed: bool) -> Response {
    let value = auth::new_token();
    let mut r = render(
        "login.html",
        lang,
        None,
        LoginPage {
            login_csrf: value.clone(),
            failed,
        },
    );
    if failed {
        *r.status_mut() = StatusCode::UNAUTHORIZED;
    }
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(st, LOGIN_COOKIE, &value, 600),
    );
    r
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct LoginForm {
    /// The API token.
    pub token: String,
    /// The double-submit value of the form.
    pub csrf: String,
}

/// `POST /console/login`: exchanges a valid token for a session.
pub async fn login(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let lang = i18n::lang_of(&headers);
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !same_secret(expected, &form.csrf) {
        return Err(PageError::Csrf(lang));
    }
    let token = form.token.trim();
    let Some(p) = st.tokens.check(token) else {
        tracing::warn!("console: sign-in with an invalid token");
        return Ok(login_form(&st, lang, true));
    };
    let id = auth::new_token();
    let session = Session {
        token_sha256: auth::hash_token(token),
        csrf: auth::new_token(),
    };
    let hours = st.settings.console.session_hours;
    let client = st
        .pool
        .get()
        .await
        .map_err(|_| PageError::Unavailable(lang))?;
    store::console::create_session(&client, &sha256_hex(&id), &session, hours)
        .await
        .map_err(|_| PageError::Unavailable(lang))?;
    tracing::info!(identity = %p.name, role = p.role.as_str(), "console: signed in");
    let mut r = Redirect::to(home_of(p.role)).into_response();
    let h = r.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(&st, SESSION_COOKIE, &id, u64::from(hours) * 3600),
    );
    h.append(header::SET_COOKIE, set_cookie(&st, LOGIN_COOKIE, "", 0));
    Ok(r)
}

/// The first page of a role.
pub fn home_of(role: Role) -> &'static str {
    match role {
        Role::Lab | Role::Enterprise => "/console/lab",
        Role::Bureau | Role::Admin => "/console/map",
    }
}

/// The logout form.
#[derive(Deserialize)]
pub struct CsrfForm {
    /// The session's CSRF token.
    pub csrf: String,
}

/// `POST /console/logout`: ends the session.
pub async fn logout(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    let lang = i18n::lang_of(&headers);
    let Some(id) = cookie(&headers, SESSION_COOKIE) else {
        return Ok(Redirect::to("/console/login").into_response());
    };
    let client = st
        .pool
        .get()
        .await
        .map_err(|_| PageError::Unavailable(lang))?;
    let key = sha256_hex(id);
    let live = store::console::session(&client, &key)
        .await
        .map_err(|_| PageError::Unavailable(lang))?;
    if let Some(s) = live {
        if !same_secret(&s.csrf, &form.csrf) {
            return Err(PageError::Csrf(lang));
        }
        store::console::delete_session(&client, &key)
            .await
            .map_err(|_| PageError::Unavailable(lang))?;
    }
    let mut r = Redirect::to("/console/login").into_response();
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(&st, SESSION_COOKIE, "", 0));
    Ok(r)
}

/// `GET /console/lang/{zh-CN|en}`: remembers the language (a preference, not server state),
/// then goes back to the console.
pub async fn set_lang(
    State(st): State<Arc<AppState>>,
    Path(lang): Path<String>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::parse(&lang).unwrap_or(Lang::Zh);
    let back = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| {
            r.find("/console")
                .or_else(|| r.find("/public"))
                .map(|i| &r[i..])
        })
        .filter(|p| !p.contains("//"))
        .unwrap_or("/console")
        .to_string();
    let mut r = Redirect::to(&back).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&st, LANG_COOKIE, lang.as_str(), 365 * 24 * 3600),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret("x", "x"));
        assert!(!same_secret("x", "y"));
    }
}
