//! `cxr explain` and `cxr audit`: the explain stage (`cxr-explain`) wired to a classifier,
//! `cxr-eval`'s DeLong CIs and permutation p-values and the ingest split linter's Cramér's V.
//!
//! Grad-CAM (`explain`) needs our own `cxr-model` classifier (gradients); the audit runs on any
//! `cxr_core::Scorer` ([`audit_with`]): our classifier (`--model RUN_DIR`) or a foreign one
//! (`--model-spec S.toml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::Tensor;
use clap::Args;
use cxr_core::{Grey8, Manifest, ManifestRecord, Scorer, Split};
use cxr_explain::audit::{AuditEvidence, AuditReport, Figure, OcclusionEvidence, SourceFigure};
use cxr_explain::occlusion::{self, Fill};
use cxr_explain::{CamItem, CamModel, CamTarget, ExplainConfig, ExplainWriter, ModelSnapshot};
use cxr_model::{Arch, Classifier, ImageRow};
use indicatif::{ProgressBar, ProgressStyle};

/// Explain's view of the trained classifier: the contract of `cxr_explain::CamModel`.
struct Cam<'a>(&'a Classifier);

/// The activations are centered on the head's standardisation mean (see
/// `Classifier::centered_feature_map`): what the standardised head compares each image with.
impl CamModel for Cam<'_> {
    fn feature_map(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.0.centered_feature_map(x)
    }
    fn logit_from_feature_map(&self, fmap: &Tensor) -> candle_core::Result<Tensor> {
        self.0.logit_from_centered_feature_map(fmap)
    }
}

/// Fingerprint of every tensor the classifier owns (weights and BatchNorm running statistics).
fn snapshot(model: &Classifier) -> cxr_explain::Result<ModelSnapshot> {
    ModelSnapshot::from_named(
        model
            .params()
            .iter()
            .map(|(n, p)| (n.clone(), p.var.as_tensor().clone())),
    )
}

/// Where the model comes from and how it reads images.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A training run folder (`model.safetensors` + `run.json`) or a `model.safetensors` file.
    #[arg(
        long,
        required_unless_present = "model_spec",
        conflicts_with = "model_spec"
    )]
    pub(crate) model: Option<PathBuf>,
    /// A foreign classifier: a model spec (TOML naming an ONNX file, its input size and normalisation).
    /// The audits take it; Grad-CAM (`explain`) needs `--model`.
    #[arg(long)]
    pub(crate) model_spec: Option<PathBuf>,
    /// Backbone (`resnet50`, `vgg16`, ...); default: the run's.
    #[arg(long)]
    pub(crate) backbone: Option<String>,
    /// Input size; default: the run's (else 224).
    #[arg(long)]
    pub(crate) image_size: Option<usize>,
    /// Manifest image column; default: the run's (else `crop`) for `--model`, `png8` for `--model-spec`.
    #[arg(long)]
    pub(crate) column: Option<String>,
    #[arg(long, default_value_t = 8)]
    pub(crate) batch_size: usize,
}

pub(crate) struct Loaded {
    pub(crate) model: Classifier,
    pub(crate) name: String,
    pub(crate) size: usize,
    pub(crate) column: String,
}

/// Loads the classifier with the image size and column from `run.json` unless given (also used by
/// `audit-confounders`).
pub(crate) fn load_model(a: &ModelArgs) -> Result<Loaded> {
    let Some(model) = &a.model else {
        bail!("this command needs our own model (`--model RUN_DIR`): Grad-CAM needs its gradients");
    };
    let (weights, run) = run_of(model)?;
    let backbone = a
        .backbone
        .clone()
        .or_else(|| run["backbone"].as_str().map(str::to_string))
        .unwrap_or_else(|| "resnet50".into());
    let arch: Arch = backbone
        .parse()
        .with_context(|| format!("--backbone {backbone}"))?;
    let size = a
        .image_size
        .or_else(|| run["config"]["image_size"].as_u64().map(|v| v as usize))
        .unwrap_or(224);
    let column = column_of_run(a, &run);
    let name = run["model"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{arch}"));
    let model = cxr_model::load_classifier(&arch, &weights)
        .with_context(|| format!("loading model {}", weights.display()))?;
    Ok(Loaded {
        model,
        name,
        size,
        column,
    })
}

/// The weights file and `run.json` (Null when absent) of a run folder or a weights file.
fn run_of(model: &Path) -> Result<(PathBuf, serde_json::Value)> {
    if !model.is_dir() {
        return Ok((model.to_path_buf(), serde_json::Value::Null));
    }
    let run_path = model.join("run.json");
    let run = match std::fs::read(&run_path) {
        Ok(b) => {
            serde_json::from_slice(&b).with_context(|| format!("reading {}", run_path.display()))?
        }
        Err(_) => serde_json::Value::Null,
    };
    Ok((model.join("model.safetensors"), run))
}

fn column_of_run(a: &ModelArgs, run: &serde_json::Value) -> String {
    a.column
        .clone()
        .or_else(|| run["config"]["image_column"].as_str().map(str::to_string))
        .unwrap_or_else(|| "crop".into())
}

/// The scorer the audits query: our classifier for `--model`, the foreign model for `--model-spec`.
pub(crate) fn scorer_for_audit(a: &ModelArgs) -> Result<Box<dyn Scorer>> {
    if let Some(spec) = &a.model_spec {
        return Ok(Box::new(cxr_onnx::OnnxScorer::from_spec_file(spec)?));
    }
    let loaded = load_model(a)?;
    Ok(Box::new(cxr_model::ClassifierScorer::new(
        loaded.model,
        loaded.name,
        loaded.size,
    )))
}

/// The manifest column the audited model reads: `--column`, else `png8` for a spec (a foreign model sees
/// whole images unless told otherwise), else the run's.
pub(crate) fn column_for_audit(a: &ModelArgs) -> Result<String> {
    if let Some(c) = &a.column {
        return Ok(c.clone());
    }
    match (&a.model, &a.model_spec) {
        (_, Some(_)) => Ok("png8".into()),
        (Some(m), None) => Ok(column_of_run(a, &run_of(m)?.1)),
        (None, None) => bail!("--model RUN_DIR or --model-spec S.toml is needed"),
    }
}

/// One manifest row with its image (the model's input column) and its lung mask on the same pixels.
struct Sample {
    row: ImageRow,
    record: ManifestRecord,
}

fn resolve(manifest: &Manifest, cell: &str) -> PathBuf {
    let p = PathBuf::from(cell.trim());
    if p.is_absolute() {
        p
    } else {
        manifest.base_dir.join(p)
    }
}

/// Rows with an image in `column` and a `mask`, originals only (no augmented copies), optionally one split.
fn samples(
    manifest: &Manifest,
    manifest_path: &Path,
    column: &str,
    split: Option<Split>,
) -> Result<Vec<Sample>> {
    if !manifest.extra_columns.iter().any(|c| c == "mask") {
        bail!(
            "{}: no `mask` column (run `cxr segment` first)",
            manifest_path.display()
        );
    }
    let (rows, _) = cxr_model::data::rows_from_manifest(manifest, column, manifest_path)
        .with_context(|| format!("reading image column `{column}`"))?;
    let by_id: BTreeMap<&str, &ManifestRecord> = manifest
        .records
        .iter()
        .map(|r| (r.id.as_str(), r))
        .collect();
    Ok(rows
        .into_iter()
        .filter(|r| r.is_original() && split.is_none_or(|s| r.split == Some(s)))
        .filter_map(|row| {
            let record = (*by_id.get(row.id.as_str())?).clone();
            let has_mask = record.get("mask").is_some_and(|m| !m.trim().is_empty());
            has_mask.then_some(Sample { row, record })
        })
        .collect())
}

/// The image the model reads and the lung mask on the same pixels: the mask is drawn on the full `png8`, so
/// for the `crop` column it is cropped with `crop_x, crop_y, crop_w, crop_h` (and resized if the crop was).
fn image_and_mask(manifest: &Manifest, s: &Sample, column: &str) -> Result<(Grey8, Grey8)> {
    let image = cxr_explain::read_grey8(&s.row.path)?;
    let mask_cell = s.record.get("mask").unwrap_or_default();
    let mut mask = cxr_explain::read_grey8(&resolve(manifest, &mask_cell))?;
    if column == "crop" {
        let num = |c: &str| -> Result<u32> {
            s.record
                .get(c)
                .and_then(|v| v.trim().parse().ok())
                .with_context(|| format!("row {}: column `{c}` missing or not a number", s.row.id))
        };
        mask = occlusion::crop(
            &mask,
            num("crop_x")?,
            num("crop_y")?,
            num("crop_w")?,
            num("crop_h")?,
        )
        .with_context(|| format!("row {}: cropping the mask", s.row.id))?;
    }
    if (mask.width, mask.height) != (image.width, image.height) {
        mask = occlusion::resize_nearest(&mask, image.width, image.height)?;
    }
    Ok((image, mask))
}

pub(crate) fn bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(what.to_string());
    pb
}

/// `cxr explain --model RUN --manifest M [--out DIR]`: Grad-CAM overlays, galleries, lung energy.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Manifest with the image column and `mask` (segment's output).
    #[arg(long)]
    manifest: PathBuf,
    /// Only this split (`train`, `val`, `test`, `finetune`); default: every row.
    #[arg(long)]
    split: Option<Split>,
    /// At most this many images (in manifest order).
    #[arg(long)]
    limit: Option<usize>,
    /// Output folder (default `target/explain/<model name>`).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn explain(args: ExplainArgs) -> Result<()> {
    let loaded = load_model(&args.model).context("explain")?;
    let manifest = Manifest::read(&args.manifest)
        .with_context(|| format!("explain: reading {}", args.manifest.display()))?;
    let mut todo =
        samples(&manifest, &args.manifest, &loaded.column, args.split).context("explain")?;
    if let Some(n) = args.limit {
        todo.truncate(n);
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/explain").join(&loaded.name));
    let mut writer = ExplainWriter::new(&out, ExplainConfig::default())
        .with_context(|| format!("explain: output folder {}", out.display()))?;
    let cam = Cam(&loaded.model);
    let pb = bar(todo.len(), "Grad-CAM");
    let mut rejects = Vec::new();
    for chunk in todo.chunks(args.model.batch_size.max(1)) {
        let rows: Vec<&ImageRow> = chunk.iter().map(|s| &s.row).collect();
        let x = cxr_model::data::batch_tensor(&rows, loaded.size, loaded.model.device())
            .context("explain: loading a batch")?;
        // Every batch is explained under the guard: a changed weight or running statistic is an error.
        let g =
            cxr_explain::grad_cam_guarded(&cam, &x, CamTarget::Covid, || snapshot(&loaded.model))
                .context("explain: Grad-CAM")?;
        for ((s, heat), logit) in chunk.iter().zip(&g.heatmaps).zip(&g.logits) {
            let added = image_and_mask(&manifest, s, &loaded.column).and_then(|(image, mask)| {
                let item = CamItem {
                    id: s.row.id.clone(),
                    source: s.row.source.clone(),
                    label: s.row.label,
                    image,
                    mask,
                };
                Ok(writer.add_with_map(&item, heat, *logit, Some(g.feature_size.0))?)
            });
            if let Err(e) = added {
                tracing::warn!(id = %s.row.id, "explain: skipped: {e:#}");
                rejects.push(format!("{}: {e:#}", s.row.id));
            }
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    let outputs = writer.finish().context("explain: writing outputs")?;
    println!(
        "explain: {} images ({} skipped) -> {}",
        outputs.rows.len(),
        rejects.len(),
        out.display()
    );
    println!(
        "{:<28} {:<10} {:>5} {:>12} {:>10}",
        "source", "class", "n", "lung energy", "lung area"
    );
    for s in &outputs.summary {
        println!(
            "{:<28} {:<10} {:>5} {:>12} {:>10.2}",
            s.source.as_str(),
            s.label.as_str(),
            s.n,
            s.mean
                .map(|m| format!("{m:.3}"))
                .unwrap_or_else(|| "n/a".into()),
            s.mean_mask_area
        );
    }
    Ok(())
}

/// `cxr audit --model RUN|--model-spec S --manifest M`, or the two steps for a model that cannot be
/// exported: `audit prepare` (images to score) and `audit finish` (their scores → `audit.json`).
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AuditCommand {
    #[command(subcommand)]
    step: Option<crate::audit_protocol::AuditStep>,
    #[command(flatten)]
    args: AuditArgs,
}

/// `cxr audit ...`: the audit, or one of its two steps.
pub fn audit_command(cmd: AuditCommand) -> Result<()> {
    match cmd.step {
        Some(step) => crate::audit_protocol::run(step),
        None => audit(cmd.args),
    }
}

/// `cxr audit --model RUN --manifest M`: source probe, occlusion tests, split design, verdict.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// The model's training manifest (with `split`, the image column and `mask`).
    #[arg(long, required = true)]
    manifest: Option<PathBuf>,
    /// Frozen features (`id, f0 … fN`, from `cxr embed`); default: the model's own pooled features.
    #[arg(long)]
    features: Option<PathBuf>,
    /// `lung_energy.csv` from `cxr explain`, for the Grad-CAM evidence.
    #[arg(long)]
    lung_energy: Option<PathBuf>,
    /// Split the occlusion tests run on (default `test`; every row when the manifest has none).
    #[arg(long, default_value = "test")]
    split: Split,
    /// Occlusion fills.
    #[arg(long, value_delimiter = ',', default_value = "mean,noise")]
    fills: Vec<String>,
    /// Folds of the patient-grouped cross-validation of the source probe.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Without `--lung-energy`: occlusion sensitivity maps on this many test images (round-robin over source
    /// and class; 0: none), for the lung energy evidence of a scorer without gradients.
    #[arg(long, default_value_t = 8)]
    saliency_images: usize,
    /// Occlusion map positions per side: at most `grid² + 1` forward passes per map (24 at 224 px: 530
    /// passes, ~65 s for a ResNet50 on a CPU).
    #[arg(long, default_value_t = 24)]
    saliency_grid: usize,
    /// Output folder (default `target/audit/<model name>`): `audit.json`, `probe.json`, occlusion images.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A stable 64-bit seed from an id (the first 8 bytes of its SHA-256).
fn seed_of(id: &str) -> u64 {
    let h = cxr_core::fsutil::sha256_bytes(id.as_bytes());
    u64::from_str_radix(&h[..16], 16).unwrap_or(0)
}

/// Label shuffles of the lungs-removed test's permutation p-value (resolution 1e-4, milliseconds on the
/// audit's few hundred images).
const PERMUTATIONS: usize = 9_999;

fn delong_figure(scores: &[f64], positives: &[bool]) -> Option<Figure> {
    cxr_eval::delong::delong(scores, positives, 0.95).map(|d| Figure::with_ci(d.auc, d.lo, d.hi))
}

/// `cxr audit`: the whole audit of the model the arguments name.
pub fn audit(args: AuditArgs) -> Result<()> {
    let scorer = scorer_for_audit(&args.model).context("audit")?;
    let column = column_for_audit(&args.model).context("audit")?;
    let report = audit_with(&args, scorer.as_ref(), &column)?;
    print_verdict(&report, &audit_out(&args, scorer.as_ref()));
    Ok(())
}

/// The audit's output folder.
pub(crate) fn audit_out(args: &AuditArgs, scorer: &dyn Scorer) -> PathBuf {
    args.out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/audit").join(scorer.name()))
}

/// Prints the verdict and every test's figure.
pub(crate) fn print_verdict(report: &AuditReport, out: &Path) {
    for verdict in &report.verdicts {
        println!(
            "audit of {}: {}",
            verdict.model,
            crate::report::verdict_headline(verdict)
        );
        for t in &verdict.tests {
            let fig = t
                .figure
                .map(|f| format!("{f:.3}"))
                .unwrap_or_else(|| "-".into());
            let ci = match (t.ci_low, t.ci_high) {
                (Some(l), Some(h)) => format!("[{l:.3}, {h:.3}]"),
                _ => String::new(),
            };
            println!(
                "  {:<22} {:<8} {fig:>6} {ci:<16} {}",
                t.test,
                format!("{:?}", t.status),
                t.detail
            );
        }
    }
    if let Some(c) = report.evidence.first().and_then(|e| e.saliency.as_ref()) {
        println!(
            "  saliency: {} maps, {} forward passes and {:.1} s per map",
            c.method, c.passes_per_map, c.seconds_per_map
        );
    }
    println!("-> {}", out.join("audit.json").display());
}

/// Reads the images of `rows` and scores them in batches; with `features`, returns the scorer's pooled
/// features too.
fn score_rows(
    scorer: &dyn Scorer,
    rows: &[&ImageRow],
    batch_size: usize,
    features: bool,
    what: &str,
) -> Result<(Vec<f64>, Vec<Vec<f32>>)> {
    let pb = bar(rows.len(), what);
    let (mut scores, mut feats) = (Vec::with_capacity(rows.len()), Vec::new());
    for chunk in rows.chunks(batch_size.max(1)) {
        let images: Vec<Grey8> = chunk
            .iter()
            .map(|r| cxr_explain::read_grey8(&r.path))
            .collect::<cxr_explain::Result<_>>()?;
        let s = scorer.score(&images, features)?;
        if s.scores.len() != images.len() {
            bail!(
                "{}: {} scores for {} images",
                scorer.name(),
                s.scores.len(),
                images.len()
            );
        }
        scores.extend(s.scores);
        if features {
            feats.extend(s.features.unwrap_or_default());
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok((scores, feats))
}

/// The whole audit (source probe when the scorer has features, occlusion AUCs full / lungs removed /
/// lungs only, split-design check, saliency rule, verdict) of any scorer reading `column`; writes
/// `audit.json` (and `probe.json`, occlusion images) and returns the report.
pub(crate) fn audit_with(
    args: &AuditArgs,
    scorer: &dyn Scorer,
    column: &str,
) -> Result<AuditReport> {
    let manifest_path = args
        .manifest
        .as_deref()
        .context("audit: --manifest M.csv is needed")?;
    let manifest = Manifest::read(manifest_path)
        .with_context(|| format!("audit: reading {}", manifest_path.display()))?;
    if manifest.records.iter().all(|r| r.split.is_none()) {
        bail!(
            "audit: {}: no `split` column (the audit needs the model's training split: apply a split design first)",
            manifest_path.display()
        );
    }
    if !manifest.columns().iter().any(|c| c == column) {
        bail!(
            "audit: {}: no `{column}` column (the image column the model reads; --column png8|crop)",
            manifest_path.display()
        );
    }
    let out = audit_out(args, scorer);
    std::fs::create_dir_all(&out).with_context(|| format!("audit: creating {}", out.display()))?;
    let batch_size = args.model.batch_size;
    let mut evidence = AuditEvidence {
        model: scorer.name().to_string(),
        ..Default::default()
    };

    // 3. Split design: the ingest linter's Cramér's V of the training split.
    evidence.cramers_v = cxr_ingest::lint(&manifest).train_cramers_v;

    // 1. Source probe on frozen features, grouped by patient.
    let features = match &args.features {
        Some(p) => {
            let f = cxr_explain::read_features(p).context("audit: --features")?;
            Some((f.ids, f.x))
        }
        None if scorer.has_features() => {
            let (rows, _) = cxr_model::data::rows_from_manifest(&manifest, column, manifest_path)
                .context("audit: image column")?;
            let rows: Vec<&ImageRow> = rows.iter().filter(|r| r.is_original()).collect();
            let (_, v) = score_rows(scorer, &rows, batch_size, true, "features")
                .context("audit: computing the model's features")?;
            if v.len() != rows.len() {
                bail!(
                    "audit: {} returned {} feature vectors for {} images",
                    scorer.name(),
                    v.len(),
                    rows.len()
                );
            }
            let cols = v.first().map_or(0, Vec::len);
            let flat: Vec<f64> = v.iter().flatten().map(|&x| f64::from(x)).collect();
            let m = cxr_explain::probe::Matrix::new(v.len(), cols, flat)?;
            Some((rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), m))
        }
        None => {
            println!(
                "audit: source probe not run: {} exposes no features (give --features or a spec's `features`)",
                scorer.name()
            );
            None
        }
    };
    if let Some((ids, x)) = features {
        let by_id: BTreeMap<&str, &ManifestRecord> = manifest
            .records
            .iter()
            .map(|r| (r.id.as_str(), r))
            .collect();
        let keep: Vec<usize> = (0..ids.len())
            .filter(|&i| by_id.contains_key(ids[i].as_str()))
            .collect();
        let xk = x.select(&keep);
        let sources: Vec<String> = keep
            .iter()
            .map(|&i| by_id[ids[i].as_str()].source.to_string())
            .collect();
        let patients: Vec<String> = keep
            .iter()
            .map(|&i| by_id[ids[i].as_str()].patient.clone())
            .collect();
        let probe_cfg = cxr_explain::ProbeConfig {
            folds: args.folds,
            ..Default::default()
        };
        match cxr_explain::source_probe(&xk, &sources, &patients, &probe_cfg) {
            Ok(probe) => {
                evidence.source_probe = probe
                    .sources
                    .iter()
                    .enumerate()
                    .filter_map(|(s, name)| {
                        let scores: Vec<f64> = probe.oof_scores.iter().map(|r| r[s]).collect();
                        let pos: Vec<bool> = sources.iter().map(|x| x == name).collect();
                        delong_figure(&scores, &pos).map(|auc| SourceFigure {
                            source: name.clone(),
                            auc,
                        })
                    })
                    .collect();
                let bytes = serde_json::to_vec_pretty(&serde_json::json!({
                    "per_source": probe.per_source, "pairs": probe.pairs, "folds": probe.folds
                }))?;
                cxr_core::fsutil::write_atomic(&out.join("probe.json"), &bytes)?;
            }
            Err(e) => println!("audit: source probe not run: {e}"),
        }
    }

    // 2. Occlusion: the model's AUC on full images, lungs removed, lungs only.
    let mut todo = samples(&manifest, manifest_path, column, Some(args.split))?;
    if todo.is_empty() {
        todo = samples(&manifest, manifest_path, column, None)?;
    }
    todo.retain(|s| s.row.label.target().is_some());
    let positives: Vec<bool> = todo
        .iter()
        .map(|s| s.row.label.target() == Some(1))
        .collect();
    let full_rows: Vec<&ImageRow> = todo.iter().map(|s| &s.row).collect();
    let (full, _) = score_rows(scorer, &full_rows, batch_size, false, "full images")
        .context("audit: scoring full images")?;
    for (k, fill_name) in args.fills.iter().enumerate() {
        if !matches!(fill_name.as_str(), "mean" | "noise") {
            bail!("audit: unknown fill `{fill_name}` (mean, noise)");
        }
        let (mut removed_imgs, mut only_imgs, mut kept) = (Vec::new(), Vec::new(), Vec::new());
        let pb = bar(todo.len(), &format!("occlusion ({fill_name})"));
        for (i, s) in todo.iter().enumerate() {
            // Noise differs per image (seeded by the id) but is the same on every run.
            let fill = match fill_name.as_str() {
                "noise" => Fill::Noise {
                    seed: seed_of(&s.row.id) ^ k as u64,
                },
                _ => Fill::Mean,
            };
            let made = image_and_mask(&manifest, s, column).and_then(|(img, mask)| {
                let name = format!("{}.png", cxr_explain::render::safe_name(&s.row.id));
                let mut images = Vec::new();
                for (kind, occluded) in [
                    ("lungs_removed", occlusion::remove_lungs(&img, &mask, fill)?),
                    ("lungs_only", occlusion::lungs_only(&img, &mask, fill)?),
                ] {
                    let p = out.join("occlusion").join(fill_name).join(kind).join(&name);
                    if let Some(d) = p.parent() {
                        std::fs::create_dir_all(d)?;
                    }
                    cxr_explain::render::write_png_grey(&p, &occluded)?;
                    images.push(occluded);
                }
                Ok(images)
            });
            match made {
                Ok(mut images) => {
                    only_imgs.push(images.pop().context("internal: lungs-only image")?);
                    removed_imgs.push(images.pop().context("internal: lungs-removed image")?);
                    kept.push(i);
                }
                Err(e) => tracing::warn!(id = %s.row.id, "occlusion skipped: {e:#}"),
            }
            pb.inc(1);
        }
        pb.finish_and_clear();
        let pos: Vec<bool> = kept.iter().map(|&i| positives[i]).collect();
        let full_k: Vec<f64> = kept.iter().map(|&i| full[i]).collect();
        let removed = cxr_explain::score_all(scorer, &removed_imgs, batch_size)
            .context("audit: scoring lungs-removed images")?;
        let only = cxr_explain::score_all(scorer, &only_imgs, batch_size)
            .context("audit: scoring lungs-only images")?;
        match (
            delong_figure(&full_k, &pos),
            delong_figure(&removed, &pos),
            delong_figure(&only, &pos),
        ) {
            (Some(f), Some(r), Some(o)) => evidence.occlusion.push(OcclusionEvidence {
                fill: fill_name.clone(),
                full: f,
                lungs_removed: r,
                lungs_only: o,
                lungs_removed_p: cxr_eval::permutation::auc_permutation_p(
                    &removed,
                    &pos,
                    PERMUTATIONS,
                    0x0cc1_05e5,
                    fill_name,
                ),
                n_covid: Some(pos.iter().filter(|&&p| p).count()),
                n_pneumonia: Some(pos.iter().filter(|&&p| !p).count()),
                small_sample: None,
            }),
            _ => println!("audit: occlusion ({fill_name}) not run: both classes are needed"),
        }
    }

    // 4. Saliency: Grad-CAM lung energy, when explain ran.
    if let Some(p) = &args.lung_energy {
        let rows = cxr_explain::read_energy_csv(p).context("audit: --lung-energy")?;
        evidence.lung_energy = cxr_explain::mean_lung_energy(&rows).map(Figure::point);
        if !rows.is_empty() {
            evidence.mean_mask_area =
                Some(rows.iter().map(|r| r.mask_area).sum::<f64>() / rows.len() as f64);
        }
        let cells: Vec<f64> = rows.iter().filter_map(|r| r.lung_cells).collect();
        if !cells.is_empty() {
            evidence.lung_cells = Some(cells.iter().sum::<f64>() / cells.len() as f64);
        }
    }

    // 4'. Without Grad-CAM evidence: occlusion sensitivity maps, which need only the scorer.
    if args.lung_energy.is_none() && args.saliency_images > 0 {
        occlusion_saliency(args, scorer, &manifest, &todo, column, &out, &mut evidence)
            .context("audit: occlusion saliency")?;
    }

    let verdict = cxr_explain::verdict(&evidence, &cxr_explain::Thresholds::default());
    let report = AuditReport {
        evidence: vec![evidence],
        verdicts: vec![verdict],
    };
    let path = out.join("audit.json");
    cxr_explain::write_audit_json(&path, &report).context("audit: writing audit.json")?;
    Ok(report)
}

/// Occlusion sensitivity maps of a few audit images (round-robin over source and class) into
/// `<out>/saliency/` (overlays, galleries, `lung_energy.csv`), and their lung energy into the evidence.
fn occlusion_saliency(
    args: &AuditArgs,
    scorer: &dyn Scorer,
    manifest: &Manifest,
    todo: &[Sample],
    column: &str,
    out: &Path,
    evidence: &mut AuditEvidence,
) -> Result<()> {
    let mut groups: BTreeMap<(String, String), Vec<&Sample>> = BTreeMap::new();
    for s in todo {
        groups
            .entry((s.row.source.to_string(), s.row.label.to_string()))
            .or_default()
            .push(s);
    }
    let mut chosen = Vec::new();
    for round in 0.. {
        let before = chosen.len();
        for g in groups.values() {
            if chosen.len() < args.saliency_images
                && let Some(s) = g.get(round)
            {
                chosen.push(*s);
            }
        }
        if chosen.len() == before || chosen.len() >= args.saliency_images {
            break;
        }
    }
    if chosen.is_empty() {
        return Ok(());
    }
    let cfg = cxr_explain::OcclusionConfig {
        grid: args.saliency_grid,
        batch_size: args.model.batch_size,
    };
    let dir = out.join("saliency");
    let mut writer = ExplainWriter::new(&dir, ExplainConfig::default())?;
    let pb = bar(chosen.len(), "occlusion maps");
    let t = std::time::Instant::now();
    let (mut passes, mut geometry) = (0, None);
    for s in &chosen {
        let (image, mask) = image_and_mask(manifest, s, column)?;
        let m = cxr_explain::occlusion_map(scorer, &image, &cfg)
            .with_context(|| format!("row {}", s.row.id))?;
        passes = m.passes;
        geometry = Some((m.patch, m.stride));
        let logit =
            (m.score.clamp(1e-6, 1.0 - 1e-6) / (1.0 - m.score.clamp(1e-6, 1.0 - 1e-6))).ln();
        let item = CamItem {
            id: s.row.id.clone(),
            source: s.row.source.clone(),
            label: s.row.label,
            image,
            mask,
        };
        writer.add_with_map(&item, &m.heat, logit as f32, Some(m.cells.0))?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    let seconds = t.elapsed().as_secs_f64() / chosen.len() as f64;
    let outputs = writer.finish()?;
    let rows = &outputs.rows;
    evidence.lung_energy = cxr_explain::mean_lung_energy(rows).map(Figure::point);
    evidence.mean_mask_area =
        Some(rows.iter().map(|r| r.mask_area).sum::<f64>() / rows.len() as f64);
    let cells: Vec<f64> = rows.iter().filter_map(|r| r.lung_cells).collect();
    if !cells.is_empty() {
        evidence.lung_cells = Some(cells.iter().sum::<f64>() / cells.len() as f64);
    }
    evidence.saliency = Some(cxr_explain::SaliencyCost {
        method: "occlusion".into(),
        images: rows.len(),
        passes_per_map: passes,
        seconds_per_map: seconds,
        patch: geometry.map(|g| g.0),
        stride: geometry.map(|g| g.1),
    });
    println!(
        "audit: occlusion maps: {} images, {passes} forward passes and {seconds:.1} s per map -> {}",
        rows.len(),
        dir.display()
    );
    Ok(())
}
