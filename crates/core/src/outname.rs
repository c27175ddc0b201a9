//! Output file names built from untrusted ids (manifest ids, sources, file stems).
//!
//! Every command that writes one file per image names it through [`safe_stem`], so a hostile id can neither
//! leave `--out` (`../../x`, `/etc/passwd`) nor make two rows share one file (ids differing only by case on a
//! case-insensitive file system, a long id cut by the OS, an id spelling another id's hashed name).

/// Longest kept prefix of a cleaned id; with the hash suffix a name stays far below the 255-byte limit.
const MAX_KEPT: usize = 80;

/// Hex digits of SHA-256 appended to a changed name (64 bits: no accidental collision among any real id set).
const HASH_HEX: usize = 16;

/// A file stem for `id`, safe in any folder on any common file system.
///
/// An id made only of `[a-z0-9._-]`, not starting with `.`, at most 80 bytes, not a Windows device name and
/// not itself ending in `_` + 16 hex digits is kept as it is (`nih-000123.png` stays readable). Any other id
/// is cleaned (other characters become `_`, lower-cased, cut to 80 bytes) and gets `_` + the first 16 hex
/// digits of its SHA-256, so distinct ids give distinct stems: kept stems never end like hashed ones.
pub fn safe_stem(id: &str) -> String {
    if is_kept(id) {
        return id.to_string();
    }
    let mut clean: String = id
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '_' | '.') => c,
            _ => '_',
        })
        .take(MAX_KEPT)
        .collect();
    if clean.is_empty() || clean.starts_with('.') {
        clean.insert(0, '_');
    }
    let hash = crate::fsutil::sha256_bytes(id.as_bytes());
    format!("{clean}_{}", &hash[..HASH_HEX])
}

fn is_kept(id: &str) -> bool {
    let allowed = |b: u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.');
    !id.is_empty()
        && id.len() <= MAX_KEPT
        && !id.starts_with('.')
        && id.bytes().all(allowed)
        && !looks_hashed(id)
        && !is_windows_device(id)
}

/// True when `s` ends in `_` + 16 hex digits, the shape of a hashed stem.
fn looks_hashed(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > HASH_HEX
        && b[b.len() - HASH_HEX - 1] == b'_'
        && b[b.len() - HASH_HEX..].iter().all(u8::is_ascii_hexdigit)
}

/// `con`, `nul.png`, `com1`: names Windows maps to devices whatever the extension.
fn is_windows_device(s: &str) -> bool {
    let base = s.split('.').next().unwrap_or(s);
    matches!(base, "con" | "prn" | "aux" | "nul")
        || (base.len() == 4
            && (base.starts_with("com") || base.starts_with("lpt"))
            && base.as_bytes()[3].is_ascii_digit())
}

/// Ids an adversary would write into a manifest, for the per-command tests that every per-image output
/// stays inside `--out` under a distinct name (add a very long id beside them).
pub const HOSTILE_IDS: &[&str] = &[
    "../../x/y",
    "/etc/passwd",
    "..",
    ".",
    "",
    ".hidden",
    "a/b",
    "a\\b",
    "C:\\x",
    "con",
    "nul.png",
    "A",
    "a",
    "Nih-1",
    "nih-1",
    "a b\tc\n",
    "é",
    "e",
];

#[cfg(test)]
mod tests {
    use super::{HOSTILE_IDS, safe_stem};
    use std::collections::HashSet;

    #[test]
    fn hostile_ids_give_distinct_plain_names() {
        let long = "x".repeat(5000);
        let long2 = format!("{}y", "x".repeat(4999));
        let mut ids: Vec<String> = HOSTILE_IDS.iter().map(|s| s.to_string()).collect();
        ids.extend([long, long2]);
        // An id spelling another id's hashed stem must not take its file.
        ids.push(safe_stem("A"));
        let mut seen = HashSet::new();
        for id in &ids {
            let s = safe_stem(id);
            assert!(!s.is_empty() && s.len() <= 120, "{id:?} -> {s:?}");
            assert!(!s.starts_with('.'), "{id:?} -> {s:?}");
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)),
                "{id:?} -> {s:?}"
            );
            // Case-insensitive file systems: distinct ids must differ after lower-casing too.
            assert!(
                seen.insert(s.to_ascii_lowercase()),
                "{id:?} collides as {s:?}"
            );
        }
    }

    #[test]
    fn plain_ids_are_kept() {
        assert_eq!(safe_stem("nih-000123.png"), "nih-000123.png");
        assert_eq!(safe_stem("hospital_a"), "hospital_a");
        assert_ne!(safe_stem("cohen:a/b"), safe_stem("cohen_a_b"));
        assert!(safe_stem("../../x/y").starts_with("_.._.._x_y_"));
    }
}
