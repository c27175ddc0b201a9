//! `cxr explain` and `cxr audit`: clap types turned into `cxr-audit`'s typed configurations, progress bars
//! and the printed summary. The audit itself (`cxr_audit::run_audit`), the Grad-CAM run and the scorer
//! loading live in `cxr-audit`.

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use clap::Args;
use cxr_audit::{
    AuditConfig, AuditOutcome, FailOn, FillKind, GradCamConfig, LoadedScorer, ModelOptions,
    ModelSource, Progress,
};
use cxr_core::Split;
use indicatif::{ProgressBar, ProgressStyle};

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
    /// Engine of a `--model-spec`: `auto` (onnxruntime where found, else tract), `onnxruntime`, `tract`
    /// (docs/MODEL_SPEC.md, "Engines").
    #[arg(long, default_value = "auto")]
    pub(crate) engine: cxr_onnx::Engine,
}

impl ModelArgs {
    /// `--model` or `--model-spec` (clap requires one).
    pub(crate) fn source(&self) -> Result<ModelSource> {
        match (&self.model, &self.model_spec) {
            (_, Some(spec)) => Ok(ModelSource::Spec(spec.clone())),
            (Some(run), None) => Ok(ModelSource::Run(run.clone())),
            (None, None) => bail!("--model RUN_DIR or --model-spec S.toml is needed"),
        }
    }

    pub(crate) fn options(&self) -> ModelOptions {
        ModelOptions {
            backbone: self.backbone.clone(),
            image_size: self.image_size,
            engine: self.engine,
        }
    }

    /// The scorer, and the column it reads: `--column`, else its model's.
    pub(crate) fn load(&self) -> Result<(LoadedScorer, String)> {
        let loaded = cxr_audit::load_scorer(&self.source()?, &self.options())?;
        let column = self.column.clone().unwrap_or_else(|| loaded.column.clone());
        Ok((loaded, column))
    }
}

/// Progress bars for `cxr-audit`'s progress callback: one bar per step, replaced when the step changes.
#[derive(Default)]
pub(crate) struct Bars(Mutex<Option<(String, ProgressBar)>>);

impl Bars {
    pub(crate) fn update(&self, p: Progress<'_>) {
        let Ok(mut current) = self.0.lock() else {
            return;
        };
        if current.as_ref().is_none_or(|(step, _)| step != p.step) {
            if let Some((_, old)) = current.take() {
                old.finish_and_clear();
            }
            *current = Some((p.step.to_string(), bar(p.total, p.step)));
        }
        if let Some((_, b)) = current.as_ref() {
            b.set_position(p.done as u64);
            if p.done >= p.total {
                b.finish_and_clear();
                *current = None;
            }
        }
    }
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
    let Some(run) = &args.model.model else {
        bail!(
            "explain: this command needs our own model (`--model RUN_DIR`): Grad-CAM needs its gradients"
        );
    };
    let model = cxr_audit::load_classifier(run, &args.model.options()).context("explain")?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("target/explain").join(cxr_core::outname::safe_stem(&model.name))
    });
    let cfg = GradCamConfig {
        column: args.model.column.clone(),
        split: args.split,
        limit: args.limit,
        batch_size: args.model.batch_size,
        out: out.clone(),
    };
    let bars = Bars::default();
    let done = cxr_audit::run_grad_cam(&model, &args.manifest, &cfg, &|p| bars.update(p))
        .context("explain")?;
    println!(
        "explain: {} images ({} skipped) -> {}",
        done.outputs.rows.len(),
        done.skipped.len(),
        out.display()
    );
    println!(
        "{:<28} {:<10} {:>5} {:>12} {:>10}",
        "source", "class", "n", "lung energy", "lung area"
    );
    for s in &done.outputs.summary {
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

/// The options of the audit itself, shared by `cxr audit` and `cxr audit prepare`.
#[derive(Debug, Clone, Args)]
pub(crate) struct AuditOptions {
    /// Frozen features (`id, f0 … fN`, from `cxr embed`); default: the model's own pooled features.
    #[arg(long)]
    pub(crate) features: Option<PathBuf>,
    /// `lung_energy.csv` from `cxr explain`, for the Grad-CAM evidence.
    #[arg(long)]
    pub(crate) lung_energy: Option<PathBuf>,
    /// Split the occlusion tests run on (default `test`; every row when the manifest has none).
    #[arg(long, default_value = "test")]
    pub(crate) split: Split,
    /// Occlusion fills.
    #[arg(long, value_delimiter = ',', default_value = "mean,noise")]
    pub(crate) fills: Vec<FillKind>,
    /// Folds of the patient-grouped cross-validation of the source probe.
    #[arg(long, default_value_t = 5)]
    pub(crate) folds: usize,
    /// Without `--lung-energy`: occlusion sensitivity maps on this many test images (round-robin over source
    /// and class; 0: none), for the lung energy evidence of a scorer without gradients.
    #[arg(long, default_value_t = 8)]
    pub(crate) saliency_images: usize,
    /// Occlusion map positions per side: at most `grid² + 1` forward passes per map (24 at 224 px: 530
    /// passes, ~65 s for a ResNet50 on a CPU).
    #[arg(long, default_value_t = 24)]
    pub(crate) saliency_grid: usize,
    /// Occlusion maps score every other position per side, then the rest only where neighbouring tiles'
    /// changes differ by at least this share of the map's largest change (157 to 376 passes of 530 on the
    /// audit's controls, lung energy within 0.01 of the exhaustive map); 0: every position.
    #[arg(long, default_value_t = cxr_explain::SaliencyPlan::DEFAULT_TOLERANCE)]
    pub(crate) saliency_tolerance: f64,
    /// The model's name in `audit.json` and the report (default: the run's model name, or the spec's file
    /// stem).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Occlusion tests and saliency maps on the test images of the training sources only (all test images
    /// when none comes from one); the score-follows-source test still sees every test image.
    #[arg(long)]
    pub(crate) occlusion_seen_only: bool,
}

impl AuditOptions {
    /// The library's configuration for a model reading `column` with batches of `batch_size`.
    pub(crate) fn to_config(&self, column: String, batch_size: usize) -> AuditConfig {
        AuditConfig {
            column: Some(column),
            split: self.split,
            fills: self.fills.clone(),
            folds: self.folds,
            features: self.features.clone(),
            lung_energy: self.lung_energy.clone(),
            saliency_images: self.saliency_images,
            saliency_grid: self.saliency_grid,
            saliency_tolerance: self.saliency_tolerance,
            batch_size,
            name: self.name.clone(),
            out: None,
            occlusion_seen_only: self.occlusion_seen_only,
            ..AuditConfig::default()
        }
    }
}

/// `cxr audit --model RUN --manifest M`: source probe, occlusion tests, split design, verdict.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// The model's training manifest (columns: docs/AUDIT.md).
    #[arg(long, required = true)]
    manifest: Option<PathBuf>,
    #[command(flatten)]
    options: AuditOptions,
    /// Output folder (default `target/audit/<model name>`): `audit.json`, `report.html`, `probe.json`,
    /// occlusion images, saliency maps. A killed audit rerun with the same model (content hash), options and
    /// manifest resumes from `.resume/`; any other run there first removes those outputs (docs/RELIABILITY.md).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Exit with status 3 when the verdict is at least this bad (`shortcut`, or `suspicious`: either).
    #[arg(long, value_name = "VERDICT")]
    fail_on: Option<FailOn>,
}

/// `cxr audit`: the whole audit of the model the arguments name.
pub fn audit(args: AuditArgs) -> Result<()> {
    let manifest = args
        .manifest
        .as_deref()
        .context("audit: --manifest M.csv is needed")?;
    let (loaded, column) = args.model.load().context("audit")?;
    let scorer = loaded.scorer.as_ref();
    let mut cfg = args.options.to_config(column, args.model.batch_size);
    let name = cfg
        .name
        .clone()
        .unwrap_or_else(|| scorer.name().to_string());
    cfg.out = Some(args.out.clone().unwrap_or_else(|| {
        PathBuf::from("target/audit").join(cxr_core::outname::safe_stem(&name))
    }));
    let bars = Bars::default();
    let outcome =
        cxr_audit::run_audit_with(scorer, manifest, &cfg, &|p| bars.update(p)).context("audit")?;
    print_outcome(&outcome);
    check_verdict(&outcome, args.fail_on)
}

/// The verdict fails the pipeline's check (`--fail-on`): the error `main_with` turns into exit status 3.
#[derive(Debug)]
pub struct VerdictFailed {
    pub model: String,
    pub verdict: cxr_audit::Overall,
    pub fail_on: FailOn,
    pub headline: String,
}

impl std::fmt::Display for VerdictFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "audit failed (--fail-on {}): {}: {}",
            self.fail_on, self.model, self.headline
        )
    }
}

impl std::error::Error for VerdictFailed {}

/// `Err(VerdictFailed)` when a verdict of the outcome is at least as bad as `fail_on`.
pub(crate) fn check_verdict(outcome: &AuditOutcome, fail_on: Option<FailOn>) -> Result<()> {
    let Some(level) = fail_on else {
        return Ok(());
    };
    match outcome
        .report
        .verdicts
        .iter()
        .find(|v| level.fails(v.verdict))
    {
        Some(v) => Err(VerdictFailed {
            model: v.model.clone(),
            verdict: v.verdict,
            fail_on: level,
            headline: crate::report::verdict_headline(v),
        }
        .into()),
        None => Ok(()),
    }
}

/// Prints what did not run, the verdict and every test's figure, and where the files are.
pub(crate) fn print_outcome(outcome: &AuditOutcome) {
    for n in &outcome.notes {
        println!("audit: {n}");
    }
    let report = &outcome.report;
    for verdict in &report.verdicts {
        println!("{}", crate::report::data_risk_words(verdict));
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
                crate::report::status_words(t.status),
                t.detail
            );
        }
    }
    if let Some(e) = report.evidence.first()
        && let Some(c) = e.saliency.as_ref()
    {
        let usable = match (e.saliency_maps_usable, e.saliency_maps) {
            (Some(k), Some(n)) => format!(", {k} of {n} usable"),
            _ => String::new(),
        };
        let time = c
            .seconds_per_map
            .map_or("no time per map (scored outside)".into(), |s| {
                format!("{s:.1} s per map")
            });
        println!(
            "  saliency: {} maps{usable}, {} forward passes and {time}",
            c.method, c.passes_per_map
        );
    }
    if !outcome.timings.is_empty() {
        let laps: Vec<String> = outcome
            .timings
            .iter()
            .map(|(step, s)| format!("{step} {s:.1} s"))
            .collect();
        println!("  time: {}", laps.join(", "));
    }
    if let Some(files) = &outcome.files {
        println!("-> {}", files.audit_json.display());
        println!("-> {}", files.report_html.display());
    }
}
