//! The lenient `msg_id` scan: recovers the message id from bytes that the strict parser
//! refused (a `NaN` token, `1e400`, a byte-order mark, an oversized body, an over-long id…),
//! so that a station can match the refusal to the message it sent. Pure, never panics.
//!
//! The rule (also in the README's wire contract):
//!
//! 1. The bytes are read as JSON tokens without being parsed: strings (with their escapes)
//!    are skipped whole, and `{`/`[` and `}`/`]` outside strings count the nesting depth.
//!    Everything else (numbers, `NaN`, a BOM, invalid UTF-8 outside strings) is ignored.
//! 2. A key is the string `"msg_id"` (exactly, no escapes) at depth 1 (directly inside the
//!    outermost object), followed by optional whitespace and `:`.
//! 3. Its value must be a JSON string (after optional whitespace) that ends within the bytes,
//!    unescapes to valid UTF-8 and is 1–[`MAX_SCANNED_ID_BYTES`] bytes long. Anything else
//!    (a number, `null`, an unterminated string) recovers nothing for that key.
//! 4. When the key occurs more than once, the last occurrence counts (as in the strict
//!    parser); if that one's value is unusable, nothing is recovered.
//!
//! The id is echoed as recovered, even when it breaks the id rule (over 128 bytes, control
//! characters): it is the station's own text, and the reply is JSON-escaped.

/// Longest id the scan recovers, in bytes (longer ones are not echoed back).
pub const MAX_SCANNED_ID_BYTES: usize = 1024;

/// The `msg_id` of a payload by the lenient rule above, or `None`.
pub fn msg_id(bytes: &[u8]) -> Option<String> {
    let mut depth = 0usize;
    let mut i = 0usize;
    let mut found: Option<Option<String>> = None;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // An unterminated string ends the scan; what was found before it counts.
                let Some(end) = string_end(bytes, i) else {
                    break;
                };
                if depth == 1 && &bytes[i..end] == b"\"msg_id\"" {
                    if let Some(after_colon) = colon_after(bytes, end) {
                        found = Some(value_at(bytes, after_colon));
                    }
                }
                i = end;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    found.flatten()
}

/// The index just past the string that starts with the quote at `start`, or `None` when it
/// does not end within the bytes.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The index after `:` when only whitespace separates `at` from it.
fn colon_after(bytes: &[u8], at: usize) -> Option<usize> {
    let i = skip_ws(bytes, at);
    (bytes.get(i) == Some(&b':')).then_some(i + 1)
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while matches!(bytes.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The string value starting after optional whitespace at `at`, unescaped, within the
/// length bound.
fn value_at(bytes: &[u8], at: usize) -> Option<String> {
    let start = skip_ws(bytes, at);
    if bytes.get(start) != Some(&b'"') {
        return None;
    }
    let end = string_end(bytes, start)?;
    // Unescaping can only shorten a string: a token far above the bound is refused unread.
    if end - start > 6 * MAX_SCANNED_ID_BYTES + 2 {
        return None;
    }
    let id: String = serde_json::from_slice(&bytes[start..end]).ok()?;
    (1..=MAX_SCANNED_ID_BYTES).contains(&id.len()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scan(s: &str) -> Option<String> {
        msg_id(s.as_bytes())
    }

    #[test]
    fn recovers_the_id_from_payloads_the_parser_refuses() {
        assert_eq!(
            scan(r#"{"msg_id":"a-1","readings":[{"value":NaN}]}"#).as_deref(),
            Some("a-1")
        );
        assert_eq!(
            scan(r#"{"readings":[{"value":1e400}], "msg_id" : "a-2"}"#).as_deref(),
            Some("a-2")
        );
        let bom = format!("\u{feff}{}", r#"{"msg_id": "a-3"}"#);
        assert_eq!(scan(&bom).as_deref(), Some("a-3"));
        let long = "x".repeat(200);
        assert_eq!(
            scan(&format!(r#"{{"msg_id":"{long}"}}"#)).as_deref(),
            Some(long.as_str())
        );
        // Escapes are unescaped; a cut-off payload still yields an id read before the cut.
        assert_eq!(
            scan(r#"{"msg_id":"\u6837-\"q\"","readings":[{"metal":"C"#).as_deref(),
            Some("样-\"q\"")
        );
        let mut bytes = br#"{"msg_id":"a-4","x":""#.to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe]);
        assert_eq!(
            msg_id(&bytes).as_deref(),
            Some("a-4"),
            "invalid UTF-8 elsewhere"
        );
    }

    #[test]
    fn recovers_nothing_that_is_not_a_top_level_string_id() {
        for payload in [
            r#"{"msg_id": 17}"#,
            r#"{"msg_id": null}"#,
            r#"{"msg_id": ""}"#,
            r#"{"msg_id": "unterminated"#,
            r#"{"extra": {"msg_id": "nested"}}"#,
            r#"[{"msg_id": "in-an-array"}]"#,
            r#"{"note": "\"msg_id\":\"in a string\""}"#,
            r#"{"msg\u005fid": "escaped-key"}"#,
            r#"{"msg_id" "no-colon"}"#,
            "",
            "{",
        ] {
            assert_eq!(scan(payload), None, "{payload}");
        }
        let too_long = "x".repeat(MAX_SCANNED_ID_BYTES + 1);
        assert_eq!(scan(&format!(r#"{{"msg_id":"{too_long}"}}"#)), None);
    }

    #[test]
    fn the_last_occurrence_counts() {
        assert_eq!(
            scan(r#"{"msg_id":"first","msg_id":"last"}"#).as_deref(),
            Some("last")
        );
        assert_eq!(scan(r#"{"msg_id":"first","msg_id":5}"#), None);
    }

    proptest! {
        /// Arbitrary bytes never panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = msg_id(&bytes);
        }

        /// Whatever follows a valid id (even garbage), the id is recovered.
        #[test]
        fn an_id_before_garbage_is_recovered(id in "[a-zA-Z0-9_-]{1,64}",
                                             tail in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = format!(r#"{{"msg_id":"{id}","#).into_bytes();
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(msg_id(&bytes), Some(id));
        }
    }
}
