//! The console's languages: zh-CN (default, `console.default_lang`) and English. Texts live
//! in `messages.toml` (embedded), one table per language with the same keys; the visitor's
//! choice is the `soilmon_lang` cookie.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::HeaderMap;

use super::cookies::cookie;

/// The language cookie.
pub const LANG_COOKIE: &str = "soilmon_lang";

/// A console language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Simplified Chinese.
    Zh,
    /// English.
    En,
}

impl Lang {
    /// `zh-CN` or `en`.
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    /// Parses `zh-CN` or `en`.
    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "zh-CN" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }
}

/// Texts of one language, by key.
pub type Texts = BTreeMap<String, String>;

/// The default language (set once at start from `console.default_lang`).
static DEFAULT: OnceLock<Lang> = OnceLock::new();

/// Sets the language of visitors without a cookie (first call wins).
pub fn set_default(lang: &str) {
    let _ = DEFAULT.set(Lang::parse(lang).unwrap_or(Lang::Zh));
}

/// The visitor's language: the cookie, else the default.
pub fn lang_of(headers: &HeaderMap) -> Lang {
    cookie(headers, LANG_COOKIE)
        .and_then(Lang::parse)
        .unwrap_or_else(|| *DEFAULT.get().unwrap_or(&Lang::Zh))
}

fn all() -> &'static BTreeMap<String, Texts> {
    static ALL: OnceLock<BTreeMap<String, Texts>> = OnceLock::new();
    ALL.get_or_init(|| {
        // Embedded and checked by the unit test below: an error cannot reach a visitor.
        toml::from_str(include_str!("messages.toml")).unwrap_or_default()
    })
}

/// The texts of `lang`.
pub fn texts(lang: Lang) -> &'static Texts {
    static EMPTY: Texts = BTreeMap::new();
    all().get(lang.as_str()).unwrap_or(&EMPTY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_languages_have_the_same_keys() {
        let zh: Vec<&String> = texts(Lang::Zh).keys().collect();
        let en: Vec<&String> = texts(Lang::En).keys().collect();
        assert!(zh.len() > 50, "messages.toml did not load");
        assert_eq!(zh, en);
    }
}
