//! Split designs: which sources and labels go to train / val / test / finetune, how many, and the seed.
//!
//! A design is a TOML file (`data-manifests/splits/*.toml`):
//!
//! ```toml
//! name = "split1"
//! description = "..."
//! seed = 2021
//! labels = ["covid", "pneumonia"]      # rows with other labels are left out (default: these two)
//!
//! [[assign]]                            # applied in order, each to the patients still unassigned
//! split = "test"
//! sources = ["bimcv", "covid19-ar"]     # source ids; `cohen:*` matches every Cohen location
//! label = "covid"                       # optional filter
//! count = 30                            # images (whole patients, never more than `count`), or
//! # fraction = 0.15                     # share of the matching patients, per source, or neither: all
//! ```
//!
//! Splits are made **by patient**: every image of a patient lands in the same split. Counts are in images;
//! patients are taken in a seeded shuffled order and skipped when they would overshoot, so a count is met
//! exactly when the pool allows. Where the pool is too small, all of it is taken and the shortfall reported.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use cxr_core::{Label, Manifest, Split};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Deserialize;

use crate::error::{IngestError, Result};

/// A split design, as read from TOML.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitDesign {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub seed: u64,
    #[serde(default = "default_labels")]
    pub labels: Vec<Label>,
    #[serde(rename = "assign")]
    pub assignments: Vec<Assignment>,
}

fn default_labels() -> Vec<Label> {
    vec![Label::Covid, Label::Pneumonia]
}

/// One step of a design.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    pub split: Split,
    pub sources: Vec<String>,
    #[serde(default)]
    pub label: Option<Label>,
    #[serde(default)]
    pub count: Option<usize>,
    #[serde(default)]
    pub fraction: Option<f64>,
}

impl SplitDesign {
    /// Reads and checks a design file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| IngestError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses TOML; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let err = |message: String| IngestError::SplitDesign {
            path: path.to_path_buf(),
            message,
        };
        let d: SplitDesign = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        if d.assignments.is_empty() {
            return Err(err("no [[assign]] step".into()));
        }
        for (i, a) in d.assignments.iter().enumerate() {
            if a.sources.is_empty() {
                return Err(err(format!("assign #{}: empty `sources`", i + 1)));
            }
            if a.count.is_some() && a.fraction.is_some() {
                return Err(err(format!(
                    "assign #{}: both `count` and `fraction`",
                    i + 1
                )));
            }
            if let Some(f) = a.fraction
                && !(0.0..=1.0).contains(&f)
            {
                return Err(err(format!("assign #{}: fraction {f} outside 0..1", i + 1)));
            }
        }
        Ok(d)
    }

    /// Every source id the design names (patterns as written).
    pub fn sources(&self) -> Vec<String> {
        let mut s: Vec<String> = self
            .assignments
            .iter()
            .flat_map(|a| a.sources.clone())
            .collect();
        s.sort();
        s.dedup();
        s
    }
}

fn matches(pattern: &str, source: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => source.starts_with(prefix),
        None => pattern == source,
    }
}

/// What [`apply`] did: images per split, and the steps whose pool was too small.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SplitReport {
    pub per_split: BTreeMap<Split, usize>,
    /// `(step number from 1, wanted images, got images)`.
    pub shortfalls: Vec<(usize, usize, usize)>,
    /// Rows of the input left out (label outside the design, or no step took them).
    pub unassigned: usize,
}

/// Applies a design: returns a manifest holding the assigned rows with their `split` set (input order kept).
/// `scale` multiplies every `count` (e.g. 0.1 to fit the paper's sizes to a small synthetic world).
pub fn apply(
    manifest: &Manifest,
    design: &SplitDesign,
    scale: f64,
) -> Result<(Manifest, SplitReport)> {
    // Patients (per source, since pseudonyms are per dataset) → their rows.
    let mut patient_rows: HashMap<(String, String), Vec<usize>> = HashMap::new();
    for (i, r) in manifest.records.iter().enumerate() {
        if design.labels.contains(&r.label) {
            patient_rows
                .entry((r.source.as_str().to_string(), r.patient.clone()))
                .or_default()
                .push(i);
        }
    }
    let mut keys: Vec<(String, String)> = patient_rows.keys().cloned().collect();
    keys.sort();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(design.seed);
    keys.shuffle(&mut rng);

    let mut split_of: Vec<Option<Split>> = vec![None; manifest.records.len()];
    let mut taken: HashSet<(String, String)> = HashSet::new();
    let mut report = SplitReport::default();
    for (step, a) in design.assignments.iter().enumerate() {
        // A patient belongs to the pool when one of its rows matches the step's source and label filters.
        let pool: Vec<&(String, String)> = keys
            .iter()
            .filter(|k| !taken.contains(*k))
            .filter(|k| a.sources.iter().any(|p| matches(p, &k.0)))
            .filter(|k| match a.label {
                Some(l) => patient_rows[*k]
                    .iter()
                    .any(|&i| manifest.records[i].label == l),
                None => true,
            })
            .collect();
        let rows_of = |k: &(String, String)| -> Vec<usize> {
            patient_rows[k]
                .iter()
                .copied()
                .filter(|&i| a.label.is_none_or(|l| manifest.records[i].label == l))
                .collect()
        };
        let mut chosen: Vec<&(String, String)> = Vec::new();
        match (a.count, a.fraction) {
            (Some(count), _) => {
                let want = ((count as f64) * scale).round() as usize;
                let mut got = 0;
                for k in &pool {
                    let n = rows_of(k).len();
                    if got + n <= want {
                        got += n;
                        chosen.push(k);
                    }
                    if got == want {
                        break;
                    }
                }
                if got < want {
                    report.shortfalls.push((step + 1, want, got));
                }
            }
            (None, Some(f)) => {
                // Per source, so every source contributes its share.
                let mut by_source: BTreeMap<&str, Vec<&(String, String)>> = BTreeMap::new();
                for k in &pool {
                    by_source.entry(k.0.as_str()).or_default().push(k);
                }
                for (_, ks) in by_source {
                    let n = ((ks.len() as f64) * f).round() as usize;
                    chosen.extend(ks.into_iter().take(n));
                }
            }
            (None, None) => chosen = pool.clone(),
        }
        for k in chosen {
            taken.insert(k.clone());
            for i in rows_of(k) {
                split_of[i] = Some(a.split);
            }
        }
    }
    let mut out = manifest.clone();
    out.records = manifest
        .records
        .iter()
        .zip(&split_of)
        .filter_map(|(r, s)| {
            s.map(|s| {
                let mut r = r.clone();
                r.split = Some(s);
                r
            })
        })
        .collect();
    for r in &out.records {
        if let Some(s) = r.split {
            *report.per_split.entry(s).or_default() += 1;
        }
    }
    report.unassigned = manifest.records.len() - out.records.len();
    Ok((out, report))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use cxr_core::{ImageFormat, ManifestRecord, SourceId};
    use std::path::PathBuf;

    pub(crate) fn rec(id: &str, source: &str, label: Label, patient: &str) -> ManifestRecord {
        ManifestRecord {
            id: id.into(),
            source: SourceId::new(source).unwrap(),
            label,
            patient: patient.into(),
            view: "PA".into(),
            path: PathBuf::from(format!("{id}.png")),
            format: ImageFormat::Png,
            sha256: format!("{id:0>64}"),
            split: None,
            extra: Default::default(),
        }
    }

    fn world() -> Manifest {
        let mut v = Vec::new();
        for (src, label) in [
            ("v2-cov19-nii", Label::Covid),
            ("nih", Label::Pneumonia),
            ("bimcv", Label::Covid),
        ] {
            for p in 0..20 {
                // two images for every fourth patient
                let n = if p % 4 == 0 { 2 } else { 1 };
                for k in 0..n {
                    v.push(rec(
                        &format!("{src}-{p}-{k}"),
                        src,
                        label,
                        &format!("{src}-pat{p}"),
                    ));
                }
            }
        }
        v.push(rec("cohen-n", "cohen:x", Label::Normal, "c1"));
        Manifest::new(v)
    }

    const DESIGN: &str = r#"
        name = "t"
        seed = 7
        [[assign]]
        split = "test"
        sources = ["bimcv"]
        [[assign]]
        split = "test"
        sources = ["v2-cov19-nii", "nih"]
        fraction = 0.2
        [[assign]]
        split = "val"
        sources = ["v2-cov19-nii", "nih"]
        label = "covid"
        count = 3
        [[assign]]
        split = "train"
        sources = ["v2-cov19-nii", "nih"]
    "#;

    #[test]
    fn designs_split_by_patient_deterministically() {
        let d = SplitDesign::parse(DESIGN, Path::new("t.toml")).unwrap();
        let (m, report) = apply(&world(), &d, 1.0).unwrap();
        let (m2, _) = apply(&world(), &d, 1.0).unwrap();
        assert_eq!(m, m2, "same seed, same split");
        // the normal Cohen row is outside the design's labels
        assert_eq!(report.unassigned, 1);
        assert_eq!(m.records.len(), 75);
        // every patient in one split
        let mut seen: HashMap<String, Split> = HashMap::new();
        for r in &m.records {
            assert_eq!(
                *seen.entry(r.patient.clone()).or_insert(r.split.unwrap()),
                r.split.unwrap()
            );
        }
        assert!(
            m.records
                .iter()
                .filter(|r| r.source.as_str() == "bimcv")
                .all(|r| r.split == Some(Split::Test))
        );
        assert_eq!(report.per_split[&Split::Val], 3);
        assert!(
            m.records
                .iter()
                .filter(|r| r.split == Some(Split::Val))
                .all(|r| r.label == Label::Covid)
        );
        // 20 % of each seen source's 20 patients in test
        let test_pat: HashSet<_> = m
            .records
            .iter()
            .filter(|r| r.split == Some(Split::Test) && r.source.as_str() == "nih")
            .map(|r| r.patient.clone())
            .collect();
        assert_eq!(test_pat.len(), 4);
        let d2 = SplitDesign {
            seed: 8,
            ..d.clone()
        };
        assert_ne!(
            apply(&world(), &d2, 1.0).unwrap().0,
            m,
            "another seed, another split"
        );
        // counts scale, shortfalls are reported
        let big = DESIGN.replace("count = 3", "count = 300");
        let (_, r) = apply(
            &world(),
            &SplitDesign::parse(&big, Path::new("t.toml")).unwrap(),
            1.0,
        )
        .unwrap();
        assert_eq!(r.shortfalls.len(), 1);
        assert_eq!(r.shortfalls[0].1, 300);
    }

    #[test]
    fn bad_designs_name_the_file() {
        for bad in [
            "name = 'x'\nseed = 1\nassign = []",
            "name = 'x'\nseed = 1\n[[assign]]\nsplit = 'train'\nsources = []",
            "name = 'x'\nseed = 1\n[[assign]]\nsplit = 'nope'\nsources = ['a']",
            "name = 'x'\nseed = 1\n[[assign]]\nsplit = 'train'\nsources = ['a']\nfraction = 2.0",
            "name = 'x'\nseed = 1\n[[assign]]\nsplit = 'train'\nsources = ['a']\ncount = 1\nfraction = 0.5",
        ] {
            let e = SplitDesign::parse(bad, Path::new("bad.toml")).unwrap_err();
            assert!(e.to_string().contains("bad.toml"), "{e}");
        }
    }
}
