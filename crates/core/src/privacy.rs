//! Pseudonyms for patient identifiers.
//!
//! Patient names, IDs and birth dates must never reach logs, manifests, caches, reports or file names.
//! Ingest replaces every identifier with `prefix-<16 hex>`: an HMAC-SHA-256 of the identifier under a key.
//! The same key gives the same pseudonym (so splits by patient stay stable across runs); without the key the
//! identifier cannot be recovered by hashing candidate names. The key comes from `CXR_PSEUDONYM_KEY` when set,
//! else a fixed project default (reproducible, but then only as strong as a plain hash: set the variable for
//! data that leaves your machine).

use sha2::{Digest, Sha256};

/// Environment variable holding the pseudonymisation key.
pub const KEY_ENV: &str = "CXR_PSEUDONYM_KEY";
const DEFAULT_KEY: &[u8] = b"cxr-confounders default pseudonym key v1";

/// A keyed pseudonymiser (HMAC-SHA-256, RFC 2104).
#[derive(Clone)]
pub struct Pseudonymizer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer { key: <hidden> }")
    }
}

impl Default for Pseudonymizer {
    fn default() -> Self {
        Self::from_env()
    }
}

impl Pseudonymizer {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    /// The key from [`KEY_ENV`], or the project default.
    pub fn from_env() -> Self {
        match std::env::var(KEY_ENV) {
            Ok(k) if !k.is_empty() => Self::new(k.as_bytes()),
            _ => Self::new(DEFAULT_KEY),
        }
    }

    /// `prefix-` followed by 16 hex digits of HMAC(key, dataset NUL identifier).
    pub fn pseudonym(&self, prefix: &str, dataset: &str, identifier: &str) -> String {
        let mut msg = Vec::with_capacity(dataset.len() + identifier.len() + 1);
        msg.extend_from_slice(dataset.as_bytes());
        msg.push(0);
        msg.extend_from_slice(identifier.trim().as_bytes());
        let mac = hmac_sha256(&self.key, &msg);
        format!("{prefix}-{}", &hex::encode(mac)[..16])
    }
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn pseudonyms_are_stable_keyed_and_hide_the_identifier() {
        let p = Pseudonymizer::new(b"k1");
        let a = p.pseudonym("pat", "covid19-ar", "DOE^JOHN");
        assert_eq!(a, p.pseudonym("pat", "covid19-ar", " DOE^JOHN "));
        assert_ne!(
            a,
            Pseudonymizer::new(b"k2").pseudonym("pat", "covid19-ar", "DOE^JOHN")
        );
        assert_ne!(a, p.pseudonym("pat", "nih", "DOE^JOHN"));
        assert!(a.starts_with("pat-") && a.len() == 20 && !a.contains("DOE"));
    }
}
