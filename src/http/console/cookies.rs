//! Reading request cookies: a leaf module that [`super::session`] and [`super::i18n`] both
//! use (so neither imports the other for it).

use axum::http::{header, HeaderMap};

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; soilmon_session=abc; soilmon_lang=en"),
        );
        assert_eq!(cookie(&h, "soilmon_session"), Some("abc"));
        assert_eq!(cookie(&h, "soilmon_lang"), Some("en"));
        assert_eq!(cookie(&h, "soilmon"), None);
    }
}
