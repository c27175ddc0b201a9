//! The counterfactual confounder test (`cxr audit-confounders`): `cxr_explain::confounders` (the algorithm)
//! wired to a synthetic world's renderer and the pipeline's input path (here) and to any scorer.
//!
//! For every planted confounder group (`cxr_synth::ConfounderKind`) whose value differs between a Covid and a
//! pneumonia source of the model's training split, it renders pairs of images of the same patient, pathology
//! and noise stream (`cxr_synth::render_counterfactual`): the base source's own image, and the same image with
//! that one group drawn from the other class's source. Both go through the pipeline's input path (8-bit
//! display, the preprocess stage's min-max conversion and resize, the segment stage's lung-box crop with its
//! 5 % margin — computed from the **ground-truth** lung mask, not the UNet's — and the model's own resize and
//! normalisation), and the model scores both. The paired score shift, signed towards the donor's class, says
//! whether the model's output follows that confounder: flagged when its bootstrap 95 % CI excludes 0 and
//! |mean shift| >= `threshold` (0.05 in probability by default), and only where the confounder is
//! label-associated in the training split (a confounder the label does not follow cannot be a shortcut).
//!
//! What differs from the real pipeline (documented in `confounders.json` too): every image takes NIH's route
//! (8-bit stored values, no window, min-max), so the format-level confounders (bit depth, stored range,
//! windows, MONOCHROME1, JPEG) are not part of the test; the counterfactual keeps the base image's size and
//! aspect; the crop uses the true lung mask.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cxr_core::{Grey8, Manifest, PixelMeta, RawImage, Scorer, Split};
use cxr_explain::confounders::{
    ConfounderPlan, Counterfactuals, KindResult, PairPattern, PairRow, confounder_test,
    report_json, write_confounder_outputs,
};
use cxr_synth::{ConfounderKind, Pattern, SourceSpec, WorldFile, render_counterfactual};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::ModelSource;
use crate::error::{AuditError, Result, StepExt};

/// Options of the confounder test; [`ConfounderConfig::new`] gives `cxr audit-confounders`' defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfounderConfig {
    /// The synthetic world the model's data came from (the folder with `world.json`, or the file).
    pub world: PathBuf,
    /// The image column the model reads (`crop`: lung-box crops, else whole preprocessed images); `None`:
    /// `png8`.
    pub column: Option<String>,
    /// Counterfactual pairs per confounder and direction (towards Covid, towards pneumonia).
    pub pairs: usize,
    /// Smallest |mean score shift| (probability) that flags a confounder.
    pub threshold: f64,
    /// Bootstrap resamples for the 95 % CI of the mean shift.
    pub bootstrap: usize,
    /// Seed of the rendered patients and of the bootstrap.
    pub seed: u64,
    /// Only these confounder groups; empty: all.
    pub kinds: Vec<ConfounderKind>,
    /// Rendered image height; `None`: the world's (`world.json` config.size).
    pub world_size: Option<usize>,
    /// The preprocess stage's output size (longest side); `None`: the manifest's `pre_size`, else the world
    /// size.
    pub preprocess_size: Option<u32>,
    /// Keep the rendered model inputs under `<out>/images/`.
    pub keep_images: bool,
    /// Images per scorer call.
    pub batch_size: usize,
    /// Output folder for `confounders.json`, `confounders.csv`, `confounder_pairs.csv`; `None`: nothing is
    /// written.
    pub out: Option<PathBuf>,
    /// Where the model came from, recorded in `confounders.json` (`extra.model_run` / `extra.model_spec`).
    pub model: Option<ModelSource>,
}

impl Default for ConfounderConfig {
    fn default() -> Self {
        Self::new(PathBuf::new())
    }
}

impl ConfounderConfig {
    /// The test on `world` with `cxr audit-confounders`' defaults.
    pub fn new(world: impl Into<PathBuf>) -> Self {
        Self {
            world: world.into(),
            column: None,
            pairs: 24,
            threshold: 0.05,
            bootstrap: 2000,
            seed: 20210204,
            kinds: Vec::new(),
            world_size: None,
            preprocess_size: None,
            keep_images: false,
            batch_size: 8,
            out: None,
            model: None,
        }
    }

    /// The image column: [`ConfounderConfig::column`], else `png8`.
    pub fn column(&self) -> &str {
        self.column.as_deref().unwrap_or("png8")
    }
}

/// What the test found, and `confounders.json`'s value.
#[derive(Debug, Clone)]
pub struct ConfounderOutcome {
    /// One result per confounder group, in report order.
    pub results: Vec<KindResult>,
    /// Every scored pair.
    pub pairs: Vec<PairRow>,
    /// The model's name as the report gives it.
    pub model: String,
    /// `confounders.json` (written with [`ConfounderConfig::out`]).
    pub json: serde_json::Value,
}

impl ConfounderOutcome {
    /// The groups the model's score follows.
    pub fn flagged(&self) -> Vec<&str> {
        self.results
            .iter()
            .filter(|r| r.flagged)
            .map(|r| r.kind.as_str())
            .collect()
    }
}

/// Everything the test needs besides the scorer: the algorithm's plan and the world's renderer.
pub struct Plan {
    pub test: ConfounderPlan,
    pub world: WorldFile,
    pub world_size: usize,
    pub preprocess_size: u32,
    /// Crop to the lung box (the model reads `crop`), else the whole preprocessed image.
    pub crop: bool,
}

/// The synthetic world as `cxr_explain::confounders` sees it: the training sources' signatures, rendered
/// through the pipeline's input path.
struct SynthWorld<'a> {
    plan: &'a Plan,
    specs: Vec<&'a SourceSpec>,
}

impl SynthWorld<'_> {
    fn kind(&self, kind: &str) -> cxr_explain::Result<ConfounderKind> {
        kind.parse().map_err(
            |e: cxr_synth::SynthError| cxr_explain::ExplainError::Invalid {
                what: "confounder kind".into(),
                message: e.to_string(),
            },
        )
    }

    fn size_of(&self, s: &SourceSpec) -> (usize, usize) {
        let h = self.plan.world_size;
        let w = if s.square {
            h
        } else {
            ((h as f32 * s.aspect).round() as usize).max(32)
        };
        (w, h)
    }

    fn input(&self, r: &cxr_synth::RenderedSample) -> cxr_explain::Result<Option<Grey8>> {
        model_input(r, self.plan.preprocess_size, self.plan.crop).map_err(|e| {
            cxr_explain::ExplainError::Invalid {
                what: "counterfactual model input".into(),
                message: e.to_string(),
            }
        })
    }
}

fn pattern(p: PairPattern) -> Pattern {
    match p {
        PairPattern::Covid => Pattern::Covid,
        PairPattern::Pneumonia => Pattern::Pneumonia,
    }
}

fn age_of(s: &SourceSpec, seed: u64) -> u32 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xA6E);
    let n: f32 = standard_normal(&mut rng);
    let [m, sd, lo, hi] = s.age;
    (m + sd * n).clamp(lo, hi).round() as u32
}

impl Counterfactuals for SynthWorld<'_> {
    fn values(&self, kind: &str, source: usize) -> serde_json::Value {
        self.kind(kind)
            .map(|k| k.spec_values(self.specs[source]))
            .unwrap_or(serde_json::Value::Null)
    }
    fn differs(&self, kind: &str, base: usize, donor: usize) -> bool {
        self.kind(kind)
            .is_ok_and(|k| k.differs(self.specs[base], self.specs[donor]))
    }
    fn base(&self, base: usize, p: PairPattern, seed: u64) -> cxr_explain::Result<Option<Grey8>> {
        let s = self.specs[base];
        let (w, h) = self.size_of(s);
        let signal = self.plan.world.config.signal;
        let r = cxr_synth::render_sample(s, pattern(p), signal, w, h, seed, age_of(s, seed));
        self.input(&r)
    }
    fn counterfactual(
        &self,
        base: usize,
        donor: usize,
        kind: &str,
        p: PairPattern,
        seed: u64,
    ) -> cxr_explain::Result<Option<Grey8>> {
        let (b, d) = (self.specs[base], self.specs[donor]);
        let (w, h) = self.size_of(b);
        let signal = self.plan.world.config.signal;
        let r = render_counterfactual(
            b,
            d,
            self.kind(kind)?,
            pattern(p),
            signal,
            w,
            h,
            seed,
            age_of(b, seed),
        );
        self.input(&r)
    }
}

/// A rendered display image → the model's input: 8-bit stored values (as synth writes NIH's PNGs) → the
/// preprocess stage (min-max, no window; resize so the longest side is `pre_size`) → the lung-box crop of
/// the segment stage (5 % margin, same rejection rule) on the ground-truth mask. `None`: the crop rule
/// rejected the image.
pub fn model_input(
    s: &cxr_synth::RenderedSample,
    pre_size: u32,
    crop: bool,
) -> Result<Option<Grey8>> {
    let (w, h) = (s.width as u32, s.height as u32);
    let stored: Vec<f32> = s
        .display
        .iter()
        .map(|&v| (v * 255.0).round().clamp(0.0, 255.0))
        .collect();
    let meta = PixelMeta {
        format: Some(cxr_core::ImageFormat::Png),
        bits_stored: 8,
        ..Default::default()
    };
    let raw = RawImage::new(w, h, stored, meta).step("counterfactual image")?;
    let cfg = cxr_preprocess::PreprocessConfig {
        size: pre_size,
        ..Default::default()
    };
    let geometry = cxr_preprocess::Geometry {
        size: cfg.size,
        resize: cfg.resize,
        filter: cfg.filter,
    };
    let processed = cxr_preprocess::preprocess(
        &raw,
        &cxr_preprocess::MetadataOverride::default(),
        &cfg.display_options("synthetic"),
        &geometry,
    )
    .map_err(|e| AuditError::config("preprocessing a counterfactual image", e.to_string()))?;
    let image = processed.image;
    if !crop {
        return Ok(Some(image));
    }
    let mask = Grey8::new(
        w,
        h,
        s.mask
            .iter()
            .map(|&m| if m != 0 { 255 } else { 0 })
            .collect(),
    )
    .step("ground-truth mask")?;
    let mask = cxr_explain::occlusion::resize_nearest(&mask, image.width, image.height)?;
    let decision = cxr_segment::lung_box(&mask);
    match (decision.crop, decision.reject) {
        (Some(b), None) => Ok(Some(cxr_explain::occlusion::crop(
            &image, b.x, b.y, b.w, b.h,
        )?)),
        _ => Ok(None),
    }
}

/// The counterfactual confounder test of any scorer on the plan's world.
pub fn run_plan(plan: &Plan, scorer: &dyn Scorer) -> Result<(Vec<KindResult>, Vec<PairRow>)> {
    let world = SynthWorld {
        plan,
        specs: plan
            .test
            .sources
            .iter()
            .filter_map(|s| plan.world.source(s))
            .collect(),
    };
    Ok(confounder_test(&plan.test, &world, scorer)?)
}

/// A standard normal draw (Box-Muller), as the world's ages were drawn.
fn standard_normal(rng: &mut impl Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Training images per source (Covid, pneumonia) from the manifest's train split: original rows (no
/// augmented copies) with an image in `column` when the manifest has that column.
pub fn train_counts(
    manifest: &Manifest,
    manifest_path: &Path,
    column: &str,
) -> Result<BTreeMap<String, (usize, usize)>> {
    let has_column = manifest.columns().iter().any(|c| c == column);
    let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in &manifest.records {
        if r.split != Some(Split::Train) {
            continue;
        }
        if r.get("aug").is_some_and(|a| !a.is_empty() && a != "orig") {
            continue;
        }
        if has_column && r.get(column).is_none_or(|c| c.trim().is_empty()) {
            continue;
        }
        let e = out.entry(r.source.to_string()).or_default();
        match r.label.target() {
            Some(1) => e.0 += 1,
            Some(_) => e.1 += 1,
            None => {}
        }
    }
    out.retain(|_, (c, p)| *c + *p > 0);
    if out.is_empty() {
        return Err(AuditError::input(
            manifest_path,
            "no labelled training rows (a `split` column with `train` is needed)",
        ));
    }
    Ok(out)
}

/// The preprocess stage's output size: the longest side in the manifest's `pre_size` (`WxH`) column.
fn pre_size_of(manifest: &Manifest) -> Option<u32> {
    manifest
        .records
        .iter()
        .filter_map(|r| r.get("pre_size"))
        .filter_map(|v| {
            let (w, h) = v.trim().split_once('x')?;
            Some(w.parse::<u32>().ok()?.max(h.parse::<u32>().ok()?))
        })
        .max()
}

/// How the world's images became model inputs (`confounders.json`'s `input_path`).
pub fn input_path_json(plan: &Plan) -> serde_json::Value {
    serde_json::json!({
        "world_size": plan.world_size,
        "preprocess_size": plan.preprocess_size,
        "crop": plan.crop,
        "display": "8-bit stored values, no window, min-max (NIH's route) for every source: format-level confounders are not part of this test",
        "lung_box": "the segment stage's rule (5% margin, same rejections) on the ground-truth lung mask, not the UNet's",
        "geometry": "the base source's nominal aspect at the world size; age from the base source's distribution"
    })
}

/// Builds the plan (world, training sources, sizes) for the manifest at `manifest`.
pub fn plan(manifest: &Path, cfg: &ConfounderConfig) -> Result<Plan> {
    let world =
        cxr_synth::read_world_json(&cfg.world).step(format!("world {}", cfg.world.display()))?;
    let m = Manifest::read_lenient(manifest, &["split"])
        .step(format!("reading {}", manifest.display()))?;
    let column = cfg.column();
    let train = train_counts(&m, manifest, column)?;
    let world_size = cfg.world_size.unwrap_or(world.config.size as usize);
    if !(16..=4096).contains(&world_size) {
        return Err(AuditError::config(
            "world size",
            format!("{world_size} out of range 16..=4096"),
        ));
    }
    let preprocess_size = cfg
        .preprocess_size
        .or_else(|| pre_size_of(&m))
        .unwrap_or(world_size as u32);
    let kinds = if cfg.kinds.is_empty() {
        ConfounderKind::ALL.to_vec()
    } else {
        let mut k = cfg.kinds.clone();
        k.sort();
        k.dedup();
        k
    };
    if cfg.pairs == 0 {
        return Err(AuditError::config("pairs", "must be at least 1"));
    }
    let sources = train
        .keys()
        .filter(|s| world.source(s).is_some())
        .cloned()
        .collect();
    Ok(Plan {
        test: ConfounderPlan {
            train,
            sources,
            kinds: kinds.iter().map(|k| k.as_str().to_string()).collect(),
            pairs: cfg.pairs,
            threshold: cfg.threshold,
            bootstrap: cfg.bootstrap,
            seed: cfg.seed,
            batch_size: cfg.batch_size,
        },
        world,
        world_size,
        preprocess_size,
        crop: column == "crop",
    })
}

/// Keeps every image a scorer is asked about as a PNG (`keep_images`).
struct Keeping<'a> {
    inner: &'a dyn Scorer,
    dir: PathBuf,
    next: std::sync::atomic::AtomicUsize,
}

impl Scorer for Keeping<'_> {
    crate::load::delegate_scorer!();
    fn score(
        &self,
        images: &[Grey8],
        features: bool,
    ) -> std::result::Result<cxr_core::Scored, cxr_core::ScoreError> {
        let first = self
            .next
            .fetch_add(images.len(), std::sync::atomic::Ordering::SeqCst);
        for (i, img) in images.iter().enumerate() {
            let p = self.dir.join(format!("{:06}.png", first + i));
            cxr_explain::render::write_png_grey(&p, img)
                .map_err(|e| cxr_core::ScoreError::new(self.name(), e.to_string()))?;
        }
        self.inner.score(images, features)
    }
}

/// The confounder test of `scorer` (trained on the manifest at `manifest`) on the configured world; writes
/// `confounders.json`, `confounders.csv` and `confounder_pairs.csv` with [`ConfounderConfig::out`].
pub fn run_confounder_test(
    scorer: &dyn Scorer,
    manifest: &Path,
    cfg: &ConfounderConfig,
) -> Result<ConfounderOutcome> {
    let plan = plan(manifest, cfg)?;
    let name = scorer.name().to_string();
    let mut extra = serde_json::json!({
        "world": cfg.world.display().to_string(),
        "manifest": manifest.display().to_string(),
        "image_size": scorer.input_size(),
        "column": cfg.column(),
    });
    match &cfg.model {
        Some(ModelSource::Run(m)) => extra["model_run"] = m.display().to_string().into(),
        Some(ModelSource::Spec(m)) => extra["model_spec"] = m.display().to_string().into(),
        None => {}
    }
    let (results, pairs) = match (&cfg.out, cfg.keep_images) {
        (Some(out), true) => {
            let dir = out.join("images");
            std::fs::create_dir_all(&dir).map_err(AuditError::io(&dir))?;
            let keeping = Keeping {
                inner: scorer,
                dir,
                next: 0.into(),
            };
            run_plan(&plan, &keeping)
        }
        _ => run_plan(&plan, scorer),
    }?;
    let json = report_json(&plan.test, &results, &name, input_path_json(&plan), extra);
    if let Some(out) = &cfg.out {
        write_confounder_outputs(out, &json, &results, &pairs)?;
    }
    Ok(ConfounderOutcome {
        results,
        pairs,
        model: name,
        json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxr_core::{ImageFormat, Label, ManifestRecord, SourceId};
    use cxr_synth::{WorldConfig, paper_sources};

    /// A "model" that reads one cue only: vertical grid lines, as the high-frequency energy of the crop's
    /// column-mean profile (averaging down the columns cancels noise; anatomy is smooth across columns).
    struct GridReader;

    fn stripe_energy(img: &Grey8) -> f64 {
        let (w, h) = (img.width as usize, img.height as usize);
        let cols: Vec<f64> = (0..w)
            .map(|x| (0..h).map(|y| img.data[y * w + x] as f64).sum::<f64>() / h as f64)
            .collect();
        // The median, not the mean: the few vertical edges of the anatomy (spine, heart, ribs' ends) give
        // spikes; grid lines raise every column.
        let mut d: Vec<f64> = cols
            .windows(3)
            .map(|t| (t[0] - 2.0 * t[1] + t[2]).abs())
            .collect();
        d.sort_by(f64::total_cmp);
        d[d.len() / 2]
    }

    impl cxr_core::Scorer for GridReader {
        fn name(&self) -> &str {
            "grid-reader"
        }
        fn input_size(&self) -> usize {
            64
        }
        fn has_features(&self) -> bool {
            false
        }
        fn score(
            &self,
            images: &[Grey8],
            _features: bool,
        ) -> std::result::Result<cxr_core::Scored, cxr_core::ScoreError> {
            Ok(cxr_core::Scored {
                scores: images
                    .iter()
                    .map(|img| 1.0 / (1.0 + (-4.0 * (stripe_energy(img) - 2.8)).exp()))
                    .collect(),
                features: None,
            })
        }
    }

    fn record(i: usize, source: &str, label: Label) -> ManifestRecord {
        ManifestRecord {
            id: format!("r{i}"),
            source: SourceId::new(source).unwrap(),
            label,
            patient: format!("p{i}"),
            view: "PA".into(),
            path: PathBuf::from(format!("img{i}.png")),
            format: ImageFormat::Png,
            sha256: String::new(),
            split: Some(Split::Train),
            extra: BTreeMap::new(),
        }
    }

    /// A world.json (paper signatures, 128 px) and a split manifest whose training rows hold `rows`.
    fn setup(dir: &Path, rows: &[(&str, Label, usize)]) -> (PathBuf, PathBuf) {
        let world = WorldFile {
            config: WorldConfig {
                size: 128,
                ..Default::default()
            },
            sources: paper_sources(),
        };
        let wj = dir.join("world.json");
        std::fs::write(&wj, serde_json::to_vec(&world).unwrap()).unwrap();
        let mut recs = Vec::new();
        for &(s, l, n) in rows {
            for _ in 0..n {
                recs.push(record(recs.len(), s, l));
            }
        }
        let mp = dir.join("manifest.csv");
        Manifest::new(recs).write(&mp).unwrap();
        (wj, mp)
    }

    fn plan_of(world: &Path, manifest: &Path, pairs: usize) -> Plan {
        let cfg = ConfounderConfig {
            column: Some("crop".into()),
            pairs,
            ..ConfounderConfig::new(world)
        };
        plan(manifest, &cfg).unwrap()
    }

    #[test]
    fn a_grid_reader_is_flagged_for_the_grid_and_nothing_else() {
        // Paper-like split: V2-COV19-NII (vertical grid) holds Covid, NIH (no grid) pneumonia. They differ in
        // every group, so all eight are tested.
        let dir = tempfile::tempdir().unwrap();
        let (w, m) = setup(
            dir.path(),
            &[
                ("v2-cov19-nii", Label::Covid, 10),
                ("nih", Label::Pneumonia, 12),
            ],
        );
        let p = plan_of(&w, &m, 12);
        assert_eq!(p.preprocess_size, 128, "no pre_size column: the world size");
        let (res, rows) = run_plan(&p, &GridReader).unwrap();
        assert_eq!(res.len(), ConfounderKind::ALL.len());
        let grid = ConfounderKind::Grid.as_str();
        for r in &res {
            assert!(r.label_associated, "{}", r.kind);
            assert!(
                (r.cramers_v - 1.0).abs() < 1e-9,
                "{}: one value per class",
                r.kind
            );
            assert!(r.n >= 20, "{}: {} pairs scored", r.kind, r.n);
            let expect = r.kind == grid;
            assert_eq!(r.flagged, expect, "{}: {}", r.kind, r.detail);
        }
        let grid = res.iter().find(|r| r.kind == "grid").unwrap();
        assert!(grid.mean_shift.unwrap() > 0.5, "{grid:?}");
        assert!(
            grid.towards_covid_mean.unwrap() > 0.5,
            "adding the grid raises P(Covid)"
        );
        assert!(
            grid.towards_pneumonia_mean.unwrap() < -0.5,
            "removing it lowers it"
        );
        // Both directions, both patterns, counterfactuals of the same patients.
        let g: Vec<&PairRow> = rows.iter().filter(|r| r.kind == "grid").collect();
        assert_eq!(g.iter().filter(|r| r.base == "nih").count(), 12);
        assert_eq!(g.iter().filter(|r| r.base == "v2-cov19-nii").count(), 12);
        assert!(
            g.iter().any(|r| r.pattern == "covid") && g.iter().any(|r| r.pattern == "pneumonia")
        );
        // Text and markers sit outside the lung crop: the counterfactual input does not change at all.
        let marker: Vec<&PairRow> = rows.iter().filter(|r| r.kind == "marker").collect();
        assert!(
            marker
                .iter()
                .all(|r| r.score_base == r.score_counterfactual)
        );
        let by_kind = |k: ConfounderKind| res.iter().find(|r| r.kind == k.as_str()).unwrap();
        let marker = by_kind(ConfounderKind::Marker);
        assert_eq!(marker.status, "not_in_model_input", "{}", marker.detail);
        assert_eq!(marker.identical_inputs, marker.n);
        assert_eq!(grid.status, "followed");
        assert_eq!(grid.identical_inputs, 0, "the grid reaches the lungs");

        // The outputs: JSON with the flag list, the CSVs.
        let json = report_json(
            &p.test,
            &res,
            "grid-reader",
            input_path_json(&p),
            serde_json::Value::Null,
        );
        let out = dir.path().join("out");
        write_confounder_outputs(&out, &json, &res, &rows).unwrap();
        let back: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("confounders.json")).unwrap()).unwrap();
        assert_eq!(back["flagged"], serde_json::json!(["grid"]));
        let csv = std::fs::read_to_string(out.join("confounders.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + ConfounderKind::ALL.len());
        let pairs = std::fs::read_to_string(out.join("confounder_pairs.csv")).unwrap();
        assert_eq!(pairs.lines().count(), 1 + rows.len());
    }

    #[test]
    fn without_label_association_nothing_is_flagged_but_sensitivity_is_recorded() {
        // Clean-world split: both sources hold both classes, so no confounder can be a shortcut; the same
        // grid reader still moves with the grid, which the sensitivity figure shows.
        let dir = tempfile::tempdir().unwrap();
        let (w, m) = setup(
            dir.path(),
            &[
                ("v2-cov19-nii", Label::Covid, 6),
                ("v2-cov19-nii", Label::Pneumonia, 6),
                ("nih", Label::Covid, 6),
                ("nih", Label::Pneumonia, 6),
            ],
        );
        let mut p = plan_of(&w, &m, 6);
        p.test.kinds = vec!["grid".into(), "noise".into()];
        let (res, _) = run_plan(&p, &GridReader).unwrap();
        for r in &res {
            assert!(!r.label_associated && !r.flagged, "{}", r.kind);
            assert_eq!(r.status, "not_label_associated");
            assert!(r.cramers_v < 1e-9);
        }
        let grid = res.iter().find(|r| r.kind == "grid").unwrap();
        assert!(grid.mean_abs_shift.unwrap() > 0.5, "{grid:?}");
    }

    #[test]
    fn a_training_split_with_one_world_source_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (w, m) = setup(
            dir.path(),
            &[("nih", Label::Covid, 3), ("nih", Label::Pneumonia, 3)],
        );
        let e = run_plan(&plan_of(&w, &m, 2), &GridReader)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 source"), "{e}");
    }
}
