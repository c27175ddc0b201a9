//! The preprocessing config (TOML): output geometry, filter, and the VOI policy per source.
//!
//! ```toml
//! size = 512            # output side (see `resize`); 0 keeps the input size
//! resize = "longest"    # longest | square | keep
//! filter = "bilinear"   # nearest | box | bilinear | hamming | catmullrom | mitchell | lanczos3
//! prefer_voi_lut = true # a file with both a VOI LUT Sequence and windows: use the LUT
//! voi_index = 0         # which window / VOI LUT of a file (0 = the first)
//!
//! [default]             # the policy of every source not listed below
//! window = "auto"       # auto | minmax | percentile | none
//! fallback = "minmax"   # what auto does without a window: minmax | percentile
//! percentile = [0.5, 99.5]
//! metadata = true       # use the manifest's window_center / window_width / photometric
//!
//! [sources.nih]         # a source id, or `cohen` for every `cohen:<location>`
//! fallback = "percentile"
//! ```
//!
//! Fields left out of a `[sources.x]` table take the built-in defaults (not `[default]`'s).
//! [`PreprocessConfig::hash`] keys the batch cache: any change to the config re-processes every image.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::PreprocessError;
use crate::display::{DisplayOptions, Fallback, WindowMode};
use crate::resize::{Filter, ResizeMode};

/// Bumped whenever the pipeline's arithmetic changes, so that old cache entries are not reused.
pub const PIPELINE_VERSION: u32 = 1;

/// How one source's images are windowed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourcePolicy {
    pub window: WindowMode,
    pub fallback: Fallback,
    pub percentile: (f64, f64),
    pub metadata: bool,
}

impl Default for SourcePolicy {
    fn default() -> Self {
        let d = DisplayOptions::default();
        Self {
            window: d.window,
            fallback: d.fallback,
            percentile: d.percentile,
            metadata: d.use_metadata,
        }
    }
}

/// The whole preprocessing config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreprocessConfig {
    pub size: u32,
    pub resize: ResizeMode,
    pub filter: Filter,
    pub prefer_voi_lut: bool,
    pub voi_index: usize,
    pub default: SourcePolicy,
    pub sources: BTreeMap<String, SourcePolicy>,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        Self {
            size: 512,
            resize: ResizeMode::Longest,
            filter: Filter::Bilinear,
            prefer_voi_lut: true,
            voi_index: 0,
            default: SourcePolicy::default(),
            sources: BTreeMap::new(),
        }
    }
}

impl PreprocessConfig {
    /// Reads a TOML config; errors name the file.
    pub fn from_toml_file(path: &Path) -> Result<Self, PreprocessError> {
        let text = std::fs::read_to_string(path).map_err(|e| cxr_core::CoreError::io(path, e))?;
        Self::from_toml_str(&text).map_err(|message| PreprocessError::Config {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses TOML text (the error is the parser's message).
    pub fn from_toml_str(text: &str) -> Result<Self, String> {
        let cfg: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        for (name, p) in std::iter::once(("default", &self.default))
            .chain(self.sources.iter().map(|(k, v)| (k.as_str(), v)))
        {
            let (lo, hi) = p.percentile;
            if !((0.0..100.0).contains(&lo) && lo < hi && hi <= 100.0) {
                return Err(format!(
                    "[{name}] percentile = [{lo}, {hi}]: need 0 <= lo < hi <= 100"
                ));
            }
        }
        Ok(())
    }

    /// The policy of a source: an exact `[sources.<id>]`, else the part before `:` (`cohen` for
    /// `cohen:hannover`), else `[default]`.
    pub fn policy(&self, source: &str) -> &SourcePolicy {
        self.sources
            .get(source)
            .or_else(|| {
                source
                    .split_once(':')
                    .and_then(|(prefix, _)| self.sources.get(prefix))
            })
            .unwrap_or(&self.default)
    }

    /// The display options for one source.
    pub fn display_options(&self, source: &str) -> DisplayOptions {
        let p = self.policy(source);
        DisplayOptions {
            window: p.window,
            fallback: p.fallback,
            percentile: p.percentile,
            prefer_voi_lut: self.prefer_voi_lut,
            voi_index: self.voi_index,
            use_metadata: p.metadata,
        }
    }

    /// SHA-256 of the canonical JSON form plus [`PIPELINE_VERSION`] (field order is fixed by the struct and
    /// the `BTreeMap`, so equal configs hash equal).
    pub fn hash(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        cxr_core::fsutil::sha256_bytes(format!("v{PIPELINE_VERSION}\n{json}").as_bytes())
    }
}
