//! The one error type of the API handlers: each variant knows its HTTP status, its message is
//! the `{"error": …}` body the API answers with, and it turns into a response by itself
//! ([`IntoResponse`]), so a handler returns `Result<_, ApiError>` and uses `?`.

use std::borrow::Cow;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::auth::Role;

/// Why a request was refused or failed. The message (`Display`) is the body's `error` text;
/// its spelling is part of the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No valid bearer token (401, with `WWW-Authenticate: Bearer`).
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// A valid token of a role the route does not allow (403).
    #[error("role {} required, token has {has}", names(required))]
    Forbidden {
        /// The roles the route allows.
        required: &'static [Role],
        /// The token's role.
        has: Role,
    },
    /// A state-changing request of a console session without its CSRF token (403).
    #[error("missing or wrong X-CSRF-Token for this session")]
    CsrfMissing,
    /// An enterprise uploaded results of points that are not its own (403; nothing stored).
    #[error(
        "not_own_point: an enterprise may upload results of its own points only; not yours: {0}"
    )]
    NotOwnPoints(String),
    /// The identity's request budget is spent (429, with `Retry-After`).
    #[error("rate limit exceeded (http.rate_limit_per_minute)")]
    RateLimited {
        /// Seconds until a request is allowed again.
        retry_after: u64,
    },
    /// The handler took longer than `http.request_timeout_secs` (408).
    #[error("the request took longer than http.request_timeout_secs")]
    Timeout,
    /// A malformed query parameter or an unreadable body (400).
    #[error("{0}")]
    BadRequest(Cow<'static, str>),
    /// No such batch or point (404).
    #[error("{0}")]
    NotFound(&'static str),
    /// The body is larger than `http.body_limit_bytes` (413).
    #[error("the body exceeds the limit of {limit} bytes (http.body_limit_bytes)")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// A content type the upload does not read (415).
    #[error("send text/csv (comma or tab) or application/json")]
    UnsupportedMediaType,
    /// The database (or another dependency) cannot answer now (503).
    #[error("{0}")]
    Unavailable(&'static str),
    /// A failure inside the server (500).
    #[error("{0}")]
    Internal(&'static str),
}

/// "lab or admin".
fn names(roles: &[Role]) -> String {
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    names.join(" or ")
}

impl ApiError {
    /// 503 for a database error, with the text the read endpoints and uploads answer.
    pub const DATABASE_RETRY: ApiError = ApiError::Unavailable("database error; retry later");

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } | ApiError::CsrfMissing | ApiError::NotOwnPoints(_) => {
                StatusCode::FORBIDDEN
            }
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// No connection from the pool: 503 "database unavailable".
impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(_: deadpool_postgres::PoolError) -> ApiError {
        ApiError::Unavailable("database unavailable")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut r = (status, Json(json!({ "error": self.to_string() }))).into_response();
        match self {
            ApiError::Unauthorized => {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited { retry_after } => {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            _ => {}
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_api_texts() {
        let e = ApiError::Forbidden {
            required: &[Role::Bureau, Role::Admin],
            has: Role::Lab,
        };
        assert_eq!(
            e.to_string(),
            "role bureau or admin required, token has lab"
        );
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        let e = ApiError::TooLarge { limit: 10 };
        assert_eq!(
            e.to_string(),
            "the body exceeds the limit of 10 bytes (http.body_limit_bytes)"
        );
        let r = ApiError::Unauthorized.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers().get(header::WWW_AUTHENTICATE),
            Some(&HeaderValue::from_static("Bearer"))
        );
        let r = ApiError::RateLimited { retry_after: 7 }.into_response();
        assert_eq!(
            r.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from(7u64))
        );
    }
}
