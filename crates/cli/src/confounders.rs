//! `cxr audit-confounders`: the counterfactual confounder test (`cxr_explain::confounders`, the
//! algorithm) wired to a synthetic world's renderer and the pipeline's input path (here) and to any scorer.
//!
//! For every planted confounder group (`cxr_synth::ConfounderKind`) whose value differs between a Covid and a
//! pneumonia source of the model's training split, it renders pairs of images of the same patient, pathology
//! and noise stream (`cxr_synth::render_counterfactual`): the base source's own image, and the same image with
//! that one group drawn from the other class's source. Both go through the pipeline's input path (8-bit
//! display, the preprocess stage's min-max conversion and resize, the segment stage's lung-box crop with its
//! 5 % margin — computed from the **ground-truth** lung mask, not the UNet's — and the model's own resize and
//! normalisation), and the model scores both. The paired score shift, signed towards the donor's class, says
//! whether the model's output follows that confounder: flagged when its bootstrap 95 % CI excludes 0 and
//! |mean shift| >= `--threshold` (0.05 in probability by default), and only where the confounder is
//! label-associated in the training split (a confounder the label does not follow cannot be a shortcut).
//!
//! What differs from the real pipeline (documented in `confounders.json` too): every image takes NIH's route
//! (8-bit stored values, no window, min-max), so the format-level confounders (bit depth, stored range,
//! windows, MONOCHROME1, JPEG) are not part of the test; the counterfactual keeps the base image's size and
//! aspect; the crop uses the true lung mask.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use cxr_core::{Grey8, Manifest, PixelMeta, RawImage, Split};
use cxr_explain::confounders::{
    ConfounderPlan, Counterfactuals, KindResult, PairPattern, PairRow, confounder_test,
    report_json, write_confounder_outputs,
};
use cxr_synth::{ConfounderKind, Pattern, SourceSpec, WorldFile, render_counterfactual};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::explain::{ModelArgs, column_for_audit, scorer_for_audit};

/// `cxr audit-confounders --world W --model RUN|--model-spec S --manifest M`: does the model follow a planted
/// confounder? (Counterfactual swaps of one confounder group at a time; synthetic worlds only.)
#[derive(Debug, Parser)]
#[command(name = "audit-confounders")]
pub struct AuditConfoundersArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// The synthetic world the model's data came from (the folder with `world.json`, or the file).
    #[arg(long)]
    pub world: PathBuf,
    /// The experiment's split manifest (`split` column; its train rows say which sources hold which class).
    #[arg(long)]
    pub manifest: PathBuf,
    /// Counterfactual pairs per confounder and direction (towards Covid, towards pneumonia).
    #[arg(long, default_value_t = 24)]
    pub pairs: usize,
    /// Smallest |mean score shift| (probability) that flags a confounder.
    #[arg(long, default_value_t = 0.05)]
    pub threshold: f64,
    /// Bootstrap resamples for the 95 % CI of the mean shift.
    #[arg(long, default_value_t = 2000)]
    pub bootstrap: usize,
    /// Seed of the rendered patients and of the bootstrap.
    #[arg(long, default_value_t = 20210204)]
    pub seed: u64,
    /// Only these confounder groups (comma-separated: framing, intensity, blur, noise, grid, collimation,
    /// text, marker); default: all.
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<ConfounderKind>,
    /// Rendered image height; default: the world's (`world.json` config.size).
    #[arg(long)]
    pub world_size: Option<usize>,
    /// The preprocess stage's output size (longest side); default: the manifest's `pre_size`, else the world
    /// size.
    #[arg(long)]
    pub preprocess_size: Option<u32>,
    /// Keep the rendered model inputs under `<out>/images/`.
    #[arg(long)]
    pub keep_images: bool,
    /// Output folder (default `target/audit-confounders/<model name>`): `confounders.json`,
    /// `confounders.csv`, `confounder_pairs.csv`.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Everything the test needs besides the scorer: the algorithm's plan and the world's renderer.
pub(crate) struct Plan {
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
                message: format!("{e:#}"),
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
    let n: f32 = rand_distr_normal(&mut rng);
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
/// the segment stage (5 % margin, same rejection rule) on the ground-truth mask.
fn model_input(s: &cxr_synth::RenderedSample, pre_size: u32, crop: bool) -> Result<Option<Grey8>> {
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
    let raw = RawImage::new(w, h, stored, meta).context("counterfactual image")?;
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
    .map_err(|e| anyhow::anyhow!("preprocessing a counterfactual image: {e}"))?;
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
    .context("ground-truth mask")?;
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
pub(crate) fn run_test(
    plan: &Plan,
    scorer: &dyn cxr_core::Scorer,
) -> Result<(Vec<KindResult>, Vec<PairRow>)> {
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

/// A standard normal draw (Box-Muller; `rand_distr` is not an xtask dependency).
fn rand_distr_normal(rng: &mut impl Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Training images per source (Covid, pneumonia) from the manifest's train split: original rows (no
/// augmented copies) with an image in `column` when the manifest has that column.
pub(crate) fn train_counts(
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
        bail!(
            "{}: no labelled training rows (a `split` column with `train` is needed)",
            manifest_path.display()
        );
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
fn input_path_json(plan: &Plan) -> serde_json::Value {
    serde_json::json!({
        "world_size": plan.world_size,
        "preprocess_size": plan.preprocess_size,
        "crop": plan.crop,
        "display": "8-bit stored values, no window, min-max (NIH's route) for every source: format-level confounders are not part of this test",
        "lung_box": "the segment stage's rule (5% margin, same rejections) on the ground-truth lung mask, not the UNet's",
        "geometry": "the base source's nominal aspect at the world size; age from the base source's distribution"
    })
}

fn print_table(results: &[KindResult]) {
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:+.3}"));
    println!(
        "{:<12} {:>5} {:>5} {:>4} {:>8} {:>18} {:>8}  status",
        "confounder", "assoc", "V", "n", "shift", "95% CI", "|shift|"
    );
    for r in results {
        println!(
            "{:<12} {:>5} {:>5.2} {:>4} {:>8} {:>18} {:>8}  {}{}",
            r.kind,
            if r.label_associated { "yes" } else { "no" },
            r.cramers_v,
            r.n,
            f(r.mean_shift),
            format!("[{}, {}]", f(r.ci_low), f(r.ci_high)),
            r.mean_abs_shift.map_or("-".into(), |v| format!("{v:.3}")),
            r.status,
            if r.flagged { "  <- FLAG" } else { "" }
        );
    }
}

/// Builds the plan from the arguments (world, manifest, sizes) for a model reading `column`.
pub(crate) fn plan_from_args(args: &AuditConfoundersArgs, column: &str) -> Result<Plan> {
    let world = cxr_synth::read_world_json(&args.world)
        .with_context(|| format!("audit-confounders: --world {}", args.world.display()))?;
    let manifest = Manifest::read(&args.manifest)
        .with_context(|| format!("audit-confounders: reading {}", args.manifest.display()))?;
    let train = train_counts(&manifest, &args.manifest, column)?;
    let world_size = args.world_size.unwrap_or(world.config.size as usize);
    if !(16..=4096).contains(&world_size) {
        bail!("audit-confounders: world size {world_size} out of range 16..=4096");
    }
    let preprocess_size = args
        .preprocess_size
        .or_else(|| pre_size_of(&manifest))
        .unwrap_or(world_size as u32);
    let kinds = if args.kinds.is_empty() {
        ConfounderKind::ALL.to_vec()
    } else {
        let mut k = args.kinds.clone();
        k.sort();
        k.dedup();
        k
    };
    if args.pairs == 0 {
        bail!("audit-confounders: --pairs must be at least 1");
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
            pairs: args.pairs,
            threshold: args.threshold,
            bootstrap: args.bootstrap,
            seed: args.seed,
            batch_size: args.model.batch_size,
        },
        world,
        world_size,
        preprocess_size,
        crop: column == "crop",
    })
}

/// Keeps every image a scorer is asked about as a PNG (`--keep-images`).
struct Keeping<'a> {
    inner: &'a dyn cxr_core::Scorer,
    dir: PathBuf,
    next: std::sync::atomic::AtomicUsize,
}

impl cxr_core::Scorer for Keeping<'_> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn input_size(&self) -> usize {
        self.inner.input_size()
    }
    fn has_features(&self) -> bool {
        self.inner.has_features()
    }
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

/// Runs the test for the scorer the arguments name, writes `confounders.json`, `confounders.csv` and
/// `confounder_pairs.csv` into the output folder, prints a table and returns the JSON it wrote.
pub fn audit_confounders(args: AuditConfoundersArgs) -> Result<serde_json::Value> {
    let audited = scorer_for_audit(&args.model).context("audit-confounders")?;
    let column = column_for_audit(&args.model).context("audit-confounders")?;
    let json = audit_confounders_with(&args, audited.as_ref(), &column)?;
    println!(
        "audit-confounders of {}: {}",
        audited.name(),
        json["verdict"].as_str().unwrap_or("")
    );
    Ok(json)
}

/// The test of any scorer reading `column`; writes the outputs, prints the table, returns the JSON.
pub(crate) fn audit_confounders_with(
    args: &AuditConfoundersArgs,
    scorer: &dyn cxr_core::Scorer,
    column: &str,
) -> Result<serde_json::Value> {
    let plan = plan_from_args(args, column)?;
    let name = scorer.name().to_string();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/audit-confounders").join(&name));
    let mut extra = serde_json::json!({
        "world": args.world.display().to_string(),
        "manifest": args.manifest.display().to_string(),
        "image_size": scorer.input_size(),
        "column": column,
    });
    if let Some(m) = &args.model.model {
        extra["model_run"] = m.display().to_string().into();
    }
    if let Some(m) = &args.model.model_spec {
        extra["model_spec"] = m.display().to_string().into();
    }
    let (results, rows) = if args.keep_images {
        let dir = out.join("images");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let keeping = Keeping {
            inner: scorer,
            dir,
            next: 0.into(),
        };
        run_test(&plan, &keeping)
    } else {
        run_test(&plan, scorer)
    }
    .context("audit-confounders")?;
    let json = report_json(&plan.test, &results, &name, input_path_json(&plan), extra);
    write_confounder_outputs(&out, &json, &results, &rows).context("audit-confounders")?;
    print_table(&results);
    println!("-> {}", out.join("confounders.json").display());
    Ok(json)
}

/// The command's entry point (the JSON is written and printed; the caller needs nothing back).
pub fn run(args: AuditConfoundersArgs) -> Result<()> {
    audit_confounders(args).map(|_| ())
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

    fn plan(world: &Path, manifest: &Path, pairs: usize) -> Plan {
        let args = AuditConfoundersArgs::try_parse_from([
            "audit-confounders".as_ref(),
            "--model".as_ref(),
            "unused".as_ref(),
            "--world".as_ref(),
            world.as_os_str(),
            "--manifest".as_ref(),
            manifest.as_os_str(),
            "--pairs".as_ref(),
            pairs.to_string().as_ref(),
        ] as [&std::ffi::OsStr; 9])
        .unwrap();
        plan_from_args(&args, "crop").unwrap()
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
        let p = plan(&w, &m, 12);
        assert_eq!(p.preprocess_size, 128, "no pre_size column: the world size");
        let (res, rows) = run_test(&p, &GridReader).unwrap();
        print_table(&res);
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
        let mut p = plan(&w, &m, 6);
        p.test.kinds = vec!["grid".into(), "noise".into()];
        let (res, _) = run_test(&p, &GridReader).unwrap();
        print_table(&res);
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
        let e = run_test(&plan(&w, &m, 2), &GridReader)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 source"), "{e}");
    }
}
