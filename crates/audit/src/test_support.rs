//! Small inputs for the unit tests: a two-source manifest with images and lung masks on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cxr_core::{Grey8, ImageFormat, Label, Manifest, ManifestRecord, SourceId, Split};

/// 16 images of 32 px over sources `a` and `b` (train 8, test 8), Covid-19 brighter, each with a two-lung
/// mask; `manifest.csv` in `dir`.
pub(crate) fn tiny_manifest(dir: &Path) -> PathBuf {
    let mut recs = Vec::new();
    for i in 0..16u32 {
        let covid = i % 4 < 2;
        let src = if i % 2 == 0 { "a" } else { "b" };
        let data: Vec<u8> = (0..32 * 32u32)
            .map(|k| ((k * 7 + i * 13) % 97) as u8 + if covid { 120 } else { 40 })
            .collect();
        let img = Grey8::new(32, 32, data).unwrap();
        let mask = Grey8::new(
            32,
            32,
            (0..32 * 32u32)
                .map(|k| {
                    let (x, y) = (k % 32, k / 32);
                    if (4..28).contains(&y) && ((3..14).contains(&x) || (18..29).contains(&x)) {
                        255
                    } else {
                        0
                    }
                })
                .collect(),
        )
        .unwrap();
        let (ip, mp) = (dir.join(format!("i{i}.png")), dir.join(format!("m{i}.png")));
        cxr_explain::render::write_png_grey(&ip, &img).unwrap();
        cxr_explain::render::write_png_grey(&mp, &mask).unwrap();
        let mut extra = BTreeMap::new();
        extra.insert("png8".to_string(), ip.display().to_string());
        extra.insert("mask".to_string(), mp.display().to_string());
        recs.push(ManifestRecord {
            id: format!("r{i}"),
            source: SourceId::new(src).unwrap(),
            label: if covid {
                Label::Covid
            } else {
                Label::Pneumonia
            },
            patient: format!("p{i}"),
            view: "PA".into(),
            path: ip.clone(),
            format: ImageFormat::Png,
            sha256: String::new(),
            split: Some(if i < 8 { Split::Train } else { Split::Test }),
            extra,
        });
    }
    let m = dir.join("manifest.csv");
    Manifest::new(recs).write(&m).unwrap();
    m
}

/// A model that reads one cue: the image's mean grey (the tiny manifest's Covid-19 images are brighter).
pub(crate) struct MeanGrey;

impl cxr_core::Scorer for MeanGrey {
    fn name(&self) -> &str {
        "mean-grey"
    }
    fn input_size(&self) -> usize {
        32
    }
    fn has_features(&self) -> bool {
        false
    }
    fn score(
        &self,
        images: &[Grey8],
        _features: bool,
    ) -> Result<cxr_core::Scored, cxr_core::ScoreError> {
        Ok(cxr_core::Scored {
            scores: images
                .iter()
                .map(|g| {
                    g.data.iter().map(|&v| f64::from(v)).sum::<f64>() / g.data.len() as f64 / 255.0
                })
                .collect(),
            features: None,
        })
    }
}

/// A model whose content hash is known, and one that returns one score too few.
pub(crate) struct Hashed(pub bool);

impl cxr_core::Scorer for Hashed {
    fn name(&self) -> &str {
        "hashed"
    }
    fn input_size(&self) -> usize {
        32
    }
    fn has_features(&self) -> bool {
        false
    }
    fn model_sha256(&self) -> Option<&str> {
        Some("ab12")
    }
    fn score(&self, images: &[Grey8], f: bool) -> Result<cxr_core::Scored, cxr_core::ScoreError> {
        let mut s = cxr_core::Scorer::score(&MeanGrey, images, f)?;
        if self.0 {
            s.scores.pop();
        }
        Ok(s)
    }
}

/// A model with a content hash that counts its calls and fails every call after the first `fail_after`
/// (an interrupted run); `invert` makes it another model (1 - mean grey).
pub(crate) struct Counted {
    pub hash: &'static str,
    pub fail_after: usize,
    pub invert: bool,
    pub calls: std::sync::atomic::AtomicUsize,
}

impl Counted {
    pub(crate) fn new(hash: &'static str, fail_after: usize, invert: bool) -> Self {
        Self {
            hash,
            fail_after,
            invert,
            calls: Default::default(),
        }
    }

    /// Calls made so far (the failing ones included).
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl cxr_core::Scorer for Counted {
    fn name(&self) -> &str {
        "counted"
    }
    fn input_size(&self) -> usize {
        32
    }
    fn has_features(&self) -> bool {
        false
    }
    fn model_sha256(&self) -> Option<&str> {
        Some(self.hash)
    }
    fn score(&self, images: &[Grey8], f: bool) -> Result<cxr_core::Scored, cxr_core::ScoreError> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n >= self.fail_after {
            return Err(cxr_core::ScoreError::new("counted", "interrupted"));
        }
        let mut s = cxr_core::Scorer::score(&MeanGrey, images, f)?;
        if self.invert {
            s.scores.iter_mut().for_each(|v| *v = 1.0 - *v);
        }
        Ok(s)
    }
}
