//! On-disk cache of pooled backbone features, keyed by content: a fingerprint of the backbone's parameters
//! (weights and BatchNorm statistics), the input size, and the SHA-256 of each image file. Frozen-mode
//! training, prediction and the audit's source probe all embed the same images with the same backbone, so
//! `reproduce` computes each feature vector once. Enabled by [`set_cache_dir`] or the environment variable
//! [`CACHE_ENV`] (a folder); without either nothing is cached. Entries are written atomically; a corrupt or short entry is
//! recomputed.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::data::ImageRow;
use crate::error::{CandleContext, Result};
use crate::net::{Arch, Classifier};

/// Folder of the feature cache (unset: no cache).
pub const CACHE_ENV: &str = "CXR_FEATURE_CACHE";

static CACHE_DIR: std::sync::RwLock<Option<PathBuf>> = std::sync::RwLock::new(None);

/// Sets the cache folder for this process (takes precedence over [`CACHE_ENV`]); `None` turns it off.
pub fn set_cache_dir(dir: Option<PathBuf>) {
    if let Ok(mut d) = CACHE_DIR.write() {
        *d = dir;
    }
}

fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = CACHE_DIR.read().ok().and_then(|d| d.clone()) {
        return Some(d);
    }
    std::env::var_os(CACHE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Cache of one (backbone state, input size).
pub struct FeatureCache {
    dir: PathBuf,
    dim: usize,
}

impl FeatureCache {
    /// The cache for `model` at `size`, when [`set_cache_dir`] or [`CACHE_ENV`] names a folder.
    pub fn from_env(model: &Classifier, size: usize) -> Result<Option<Self>> {
        let Some(root) = cache_dir() else {
            return Ok(None);
        };
        let fp = backbone_fingerprint(model)?;
        // The per-image standardisation changes what the backbone sees, so it is part of the key.
        let norm = if model.per_image_norm() { "-pin" } else { "" };
        let dir = root.join(format!("{}-{}-{size}{norm}", model.arch(), &fp[..24]));
        Ok(Some(Self {
            dir,
            dim: model.arch().feature_dim(),
        }))
    }

    fn entry(&self, image_sha: &str) -> PathBuf {
        self.dir.join(format!("{image_sha}.f32"))
    }

    /// The cached vector of an image (by content hash), if present and whole.
    pub fn get(&self, image_sha: &str) -> Option<Vec<f32>> {
        let bytes = std::fs::read(self.entry(image_sha)).ok()?;
        if bytes.len() != self.dim * 4 {
            return None;
        }
        Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }

    pub fn put(&self, image_sha: &str, v: &[f32]) -> Result<()> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        cxr_core::fsutil::write_atomic(&self.entry(image_sha), &bytes)?;
        Ok(())
    }
}

/// SHA-256 over the names and bytes of every backbone tensor (sorted by name).
fn backbone_fingerprint(model: &Classifier) -> Result<String> {
    let mut h = Sha256::new();
    for (name, p) in model.params().iter() {
        if !Arch::is_backbone_param(name) {
            continue;
        }
        h.update(name.as_bytes());
        let values = p
            .var
            .as_tensor()
            .flatten_all()
            .and_then(|t| t.to_dtype(candle_core::DType::F32))
            .and_then(|t| t.to_vec1::<f32>())
            .ctx(|| format!("fingerprinting {name}"))?;
        for v in values {
            h.update(v.to_le_bytes());
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// Content hash of an image file.
pub fn image_key(path: &Path) -> Result<String> {
    Ok(cxr_core::fsutil::sha256_file(path)?)
}

/// Rows whose features are not cached yet, and the cached ones by position.
pub fn split_cached(
    cache: &FeatureCache,
    rows: &[&ImageRow],
) -> Result<(Vec<String>, Vec<Option<Vec<f32>>>)> {
    let keys = rows
        .iter()
        .map(|r| image_key(&r.path))
        .collect::<Result<Vec<_>>>()?;
    let hits = keys.iter().map(|k| cache.get(k)).collect();
    Ok((keys, hits))
}
