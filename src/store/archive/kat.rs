//! Known-answer tests for the archive's hash formats: fixed inputs and the hex outputs the
//! code produced when these vectors were written. Every stored archive entry commits to these
//! bytes, so a change of the hash input layout (a field added, moved, re-encoded or
//! re-prefixed) breaks the verification of every archive already written: it must fail here
//! first, not in a bureau's `archive verify`.

use super::{
    entry_hash, readings_digest, readings_digest_in_order, sha256_hex, DigestRow, EntryFields,
};

/// Digest of the empty list of readings (a message whose readings were all deleted).
const EMPTY_DIGEST: &str = "39825559d5573021df2e47eb5063d571c15d71757312ecfccafac8c93813536b";
/// Digest of [`rows`].
const ROWS_DIGEST: &str = "13f8d363e172bddf6b97c1bea108f1de0c46acd4006a82e1c133ab631e868008";
/// Entry hash of [`entry`].
const ENTRY_HASH: &str = "046526d5b8102c1f8365cfb5bf89ed918cbe903e6155175cb227bbbf1d991b2e";
/// Entry hash of the first entry of a chain (empty previous hash, lab batch kind).
const FIRST_ENTRY_HASH: &str = "c79cf3d231bb89ae188b1a92c05177555812452c7705334759fd01e4a40da73c";

/// Two readings of one station message and one of another: every field set at least once,
/// every optional field both present and absent, a non-ASCII unit, a value below detection.
fn rows() -> Vec<DigestRow> {
    vec![
        DigestRow {
            msg_id: "m-0001".into(),
            metal: "Cd".into(),
            sampled_at_us: 1_795_836_600_000_000,
            point_id: "441781-T-0001".into(),
            value_mgkg: 0.45,
            value_orig: 450.0,
            unit_orig: "µg/kg".into(),
            detected: true,
            level: "screening".into(),
            ph: Some(6.2),
            screening_mgkg: Some(0.4),
            intervention_mgkg: Some(2.0),
            standard_id: Some("GB15618-2018".into()),
        },
        DigestRow {
            msg_id: "m-0001".into(),
            metal: "Pb".into(),
            sampled_at_us: 1_795_836_600_000_000,
            point_id: "441781-T-0001".into(),
            value_mgkg: 20.0,
            value_orig: 20.0,
            unit_orig: "mg/kg".into(),
            detected: true,
            level: "clean".into(),
            ph: Some(6.2),
            screening_mgkg: Some(100.0),
            intervention_mgkg: Some(500.0),
            standard_id: Some("GB15618-2018".into()),
        },
        DigestRow {
            msg_id: "m-0002".into(),
            metal: "Hg".into(),
            sampled_at_us: 1_795_840_200_123_456,
            point_id: "441702-T-0001".into(),
            value_mgkg: 0.01,
            value_orig: 0.01,
            unit_orig: "mg/kg".into(),
            detected: false,
            level: "clean".into(),
            ph: None,
            screening_mgkg: Some(2.4),
            intervention_mgkg: None,
            standard_id: None,
        },
    ]
}

/// An entry in the middle of a chain.
fn entry<'a>(prev_hash: &'a str, raw_sha256: &'a str, digest: &'a str) -> EntryFields<'a> {
    EntryFields {
        seq: 42,
        prev_hash,
        kind: "station_message",
        reference: "st01/m-0001",
        raw_sha256,
        readings_digest: digest,
        created_at_us: 1_795_836_601_234_567,
    }
}

#[test]
fn readings_digest_known_answers() {
    assert_eq!(readings_digest(&[]), EMPTY_DIGEST);
    assert_eq!(readings_digest(&rows()), ROWS_DIGEST);
}

#[test]
fn readings_digest_ignores_input_order_and_streams_the_same() {
    let mut shuffled = rows();
    shuffled.reverse();
    assert_eq!(readings_digest(&shuffled), ROWS_DIGEST);
    let sorted = rows();
    assert_eq!(readings_digest_in_order(sorted.iter()), ROWS_DIGEST);
}

#[test]
fn entry_hash_known_answers() {
    let raw = sha256_hex(br#"{"msg_id":"m-0001"}"#);
    let prev = "a".repeat(64);
    assert_eq!(entry_hash(&entry(&prev, &raw, ROWS_DIGEST)), ENTRY_HASH);
    let first = EntryFields {
        seq: 1,
        prev_hash: "",
        kind: "lab_batch",
        reference: "LAB-2026-001",
        raw_sha256: &raw,
        readings_digest: EMPTY_DIGEST,
        created_at_us: 0,
    };
    assert_eq!(entry_hash(&first), FIRST_ENTRY_HASH);
}

#[test]
fn entry_hash_commits_to_every_field() {
    let raw = sha256_hex(b"raw");
    let prev = "a".repeat(64);
    let base = entry(&prev, &raw, ROWS_DIGEST);
    let h = entry_hash(&base);
    let changed = [
        EntryFields {
            seq: 43,
            ..base.clone()
        },
        EntryFields {
            prev_hash: "b",
            ..base.clone()
        },
        EntryFields {
            kind: "lab_batch",
            ..base.clone()
        },
        EntryFields {
            reference: "st01/m-0002",
            ..base.clone()
        },
        EntryFields {
            raw_sha256: "c",
            ..base.clone()
        },
        EntryFields {
            readings_digest: EMPTY_DIGEST,
            ..base.clone()
        },
        EntryFields {
            created_at_us: base.created_at_us + 1,
            ..base.clone()
        },
    ];
    for (i, c) in changed.iter().enumerate() {
        assert_ne!(
            entry_hash(c),
            h,
            "field {i} is not covered by the entry hash"
        );
    }
    // Length prefixes keep field boundaries: moving a byte across them changes the hash.
    let a = EntryFields {
        kind: "station_messagest01/",
        reference: "m-0001",
        ..base.clone()
    };
    assert_ne!(entry_hash(&a), h);
}
