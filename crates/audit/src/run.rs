//! The whole audit of one scorer on one manifest: source probe, occlusion AUCs (full / lungs removed /
//! lungs only, per fill), the split design's Cramér's V, the saliency evidence (Grad-CAM's lung energy from a
//! file, or occlusion sensitivity maps), the verdict; `audit.json` and `report.html` when asked.
//!
//! What the audit asks the scorer never depends on the scores (the order and the images are fixed by the
//! manifest and the configuration), with one exception that keeps the two-step audit working: a refined
//! occlusion map scores part of its positions where its coarse pass says the map changes, always among the
//! exhaustive map's positions, and every position when the coarse pass is empty, as it is for the
//! recording scorer's constant answers. So the replaying scorer of `crate::protocol` is asked a subset of
//! what the recording one was.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cxr_core::{Grey8, Manifest, ManifestRecord, Scorer, Split};
use cxr_explain::audit::{AuditEvidence, AuditReport, Figure, OcclusionEvidence, SourceFigure};
use cxr_explain::occlusion::{self, Fill};
use cxr_explain::{ExplainConfig, ExplainWriter, ProbeResult};
use cxr_model::ImageRow;

use crate::config::{AuditConfig, FillKind};
use crate::error::{AuditError, Result, StepExt};
use crate::input::{
    Sample, cam_item, check_manifest, image_and_mask, read_manifest, samples, with_lung_masks,
};
use crate::load::Named;
use crate::progress::{Bar, Progress};
use crate::resume::{Journal, RunKey};

/// Label shuffles of the lungs-removed test's permutation p-value (resolution 1e-4, milliseconds on the
/// audit's few hundred images).
const PERMUTATIONS: usize = 9_999;

/// What one audit found, and what it wrote.
#[derive(Debug, Clone)]
pub struct AuditOutcome {
    /// The evidence and the verdict: what `audit.json` holds.
    pub report: AuditReport,
    /// The source probe's full result (`probe.json`: per source, per pair of sources), when it ran.
    pub probe: Option<ProbeResult>,
    /// Tests that could not run, and why (`source probe not run: ...`).
    pub notes: Vec<String>,
    /// The files written, with [`AuditConfig::out`].
    pub files: Option<AuditFiles>,
    /// The manifest and the configuration the audit ran with (the report says what was run).
    pub manifest: PathBuf,
    pub config: AuditConfig,
    /// Wall time of each step (`lung masks`, `source probe`, `full images and behaviour tests`,
    /// `occlusion (mean)`, ..., `saliency maps`, `verdict and report`), in seconds: for the log and the
    /// command's summary, never in `audit.json`.
    pub timings: Vec<(String, f64)>,
}

/// The files an audit wrote into its output folder.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditFiles {
    pub dir: PathBuf,
    pub audit_json: PathBuf,
    pub report_html: PathBuf,
    pub probe_json: Option<PathBuf>,
    /// Saliency galleries (one PNG per source and class): the occlusion maps' under `saliency/gallery/`, or
    /// those beside the `lung_energy.csv` the configuration named.
    pub galleries: Vec<PathBuf>,
}

/// The audit of `scorer` on the manifest at `manifest` (read with the audit's input contract:
/// [`crate::input::read_manifest`]).
pub fn run_audit(scorer: &dyn Scorer, manifest: &Path, cfg: &AuditConfig) -> Result<AuditOutcome> {
    run_audit_with(scorer, manifest, cfg, &|_| {})
}

/// [`run_audit`] with a progress callback (one [`Progress`] per image or batch of each long step).
pub fn run_audit_with(
    scorer: &dyn Scorer,
    manifest: &Path,
    cfg: &AuditConfig,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<AuditOutcome> {
    let m = read_manifest(manifest, cfg.column())?;
    run_audit_on(scorer, &m, manifest, cfg, progress)
}

/// The audit on a manifest already in memory; `manifest_path` names it in errors (and `base_dir` resolves
/// its relative cells).
pub fn run_audit_on(
    scorer: &dyn Scorer,
    manifest: &Manifest,
    manifest_path: &Path,
    cfg: &AuditConfig,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<AuditOutcome> {
    let named;
    let scorer: &dyn Scorer = match &cfg.name {
        Some(name) => {
            named = Named {
                inner: scorer,
                name,
            };
            &named
        }
        None => scorer,
    };
    cfg.validate()?;
    let column = cfg.column();
    check_manifest(
        manifest,
        manifest_path,
        crate::input::required_columns(column),
    )?;
    if let Some(out) = &cfg.out {
        std::fs::create_dir_all(out).map_err(AuditError::io(out))?;
    }
    // Resumable: the scorer calls of a killed audit with the same model, configuration and manifest are
    // reused; another run's outputs in the folder are removed before anything is written (crate::resume).
    let journal = match &cfg.out {
        Some(out) => Some(open_journal(scorer, manifest, manifest_path, cfg, out)?),
        None => None,
    };
    let mut laps = crate::progress::Laps::start();
    let journaled = journal.as_ref().map(|j| j.scorer(scorer));
    let scorer: &dyn Scorer = match &journaled {
        Some(j) => j,
        None => scorer,
    };
    let (manifest, shipped) = with_lung_masks(
        manifest,
        manifest_path,
        column,
        cfg.out.as_deref(),
        progress,
    )?;
    let manifest: &Manifest = &manifest;
    laps.lap("lung masks");
    let batch_size = cfg.batch_size;
    let mut notes = Vec::new();
    if let Some(m) = &shipped {
        let kept = if cfg.out.is_some() {
            format!(" (in {}; its manifest.csv has them)", m.dir.display())
        } else {
            String::new()
        };
        notes.push(format!(
            "lung masks: the manifest has no `mask` column, so they were computed with the shipped default lung UNet{kept}{}",
            if m.unreadable > 0 {
                format!("; {} unreadable image(s) left out", m.unreadable)
            } else {
                String::new()
            }
        ));
    }
    let mut note = |n: String| {
        tracing::warn!("audit: {n}");
        notes.push(n);
    };
    let mut evidence = AuditEvidence {
        model: scorer.name().to_string(),
        model_sha256: scorer.model_sha256().map(str::to_string),
        engine: scorer.engine().map(str::to_string),
        ..Default::default()
    };

    // 0. The data risk: the ingest linter's Cramér's V of the training split.
    evidence.cramers_v = cxr_ingest::lint(manifest).train_cramers_v;

    // 1. Source probe on frozen features, grouped by patient.
    let features = match &cfg.features {
        Some(p) => {
            let f = cxr_explain::read_features(p).step("features")?;
            Some((f.ids, f.x))
        }
        None if scorer.has_features() => {
            let (rows, _) = cxr_model::data::rows_from_manifest(manifest, column, manifest_path)?;
            let rows: Vec<&ImageRow> = rows.iter().filter(|r| r.is_original()).collect();
            let (_, v) = score_rows(scorer, &rows, batch_size, true, "features", progress)
                .step("computing the model's features")?;
            if v.len() != rows.len() {
                return Err(cxr_core::ScoreError::new(
                    scorer.name(),
                    format!(
                        "returned {} feature vectors for {} images",
                        v.len(),
                        rows.len()
                    ),
                )
                .into());
            }
            let cols = v.first().map_or(0, Vec::len);
            let flat: Vec<f64> = v.iter().flatten().map(|&x| f64::from(x)).collect();
            let m = cxr_explain::probe::Matrix::new(v.len(), cols, flat)?;
            Some((rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), m))
        }
        None => {
            note(format!(
                "source probe not run: {} exposes no features (give features.csv or a spec's `features`)",
                scorer.name()
            ));
            None
        }
    };
    let mut probe_result = None;
    let mut probe_json = None;
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
            folds: cfg.folds,
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
                if let Some(out) = &cfg.out {
                    let p = out.join("probe.json");
                    write_json(
                        &p,
                        &serde_json::json!({
                            "per_source": probe.per_source, "pairs": probe.pairs, "folds": probe.folds
                        }),
                    )?;
                    probe_json = Some(p);
                }
                probe_result = Some(probe);
            }
            Err(e) => note(format!("source probe not run: {e}")),
        }
    }
    laps.lap("source probe");

    // 2. Behaviour: the model's scores of the test images. Does the score follow the source within a class
    // (each source against the rest, the training split's seen sources against the unseen), the way the
    // training split associated it, and does the pooled AUC stray from the within-source AUCs?
    let mut todo = samples(manifest, manifest_path, column, Some(cfg.split))?;
    if todo.is_empty() {
        return Err(AuditError::input(
            manifest_path,
            format!(
                "no `{}` rows with a readable `{column}` image and a `mask`: pick the split to audit with --split",
                cfg.split.as_str()
            ),
        ));
    }
    todo.retain(|s| s.row.label.target().is_some());
    let positives: Vec<bool> = todo
        .iter()
        .map(|s| s.row.label.target() == Some(1))
        .collect();
    let full_rows: Vec<&ImageRow> = todo.iter().map(|s| &s.row).collect();
    let (full, _) = score_rows(
        scorer,
        &full_rows,
        batch_size,
        false,
        "full images",
        progress,
    )
    .step("scoring full images")?;
    // The training split's mix: which sources the model saw, and with which classes.
    let mut training = cxr_explain::behaviour::TrainingMix::new();
    for r in manifest
        .records
        .iter()
        .filter(|r| r.split == Some(Split::Train))
    {
        let e = training.entry(r.source.to_string()).or_default();
        match r.label.target() {
            Some(1) => e.0 += 1,
            Some(_) => e.1 += 1,
            None => {}
        }
    }
    let seen: BTreeSet<String> = training.keys().cloned().collect();
    {
        let sources: Vec<String> = todo.iter().map(|s| s.row.source.to_string()).collect();
        let patients: Vec<String> = todo.iter().map(|s| s.record.patient.clone()).collect();
        let table = cxr_explain::ScoreTable {
            scores: &full,
            positives: &positives,
            sources: &sources,
            patients: &patients,
        };
        let follows = cxr_explain::score_follows_source(
            &table,
            (!training.is_empty()).then_some(&training),
            &cfg.behaviour,
        );
        if let Some(why) = &follows.not_run {
            note(format!("score-follows-source test not run: {why}"));
        }
        evidence.score_follows_source = Some(follows);
        evidence.auc_spread = Some(cxr_explain::auc_spread(&table, &cfg.behaviour));
    }
    laps.lap("full images and behaviour tests");

    // 3. Occlusion: the model's AUC on full images, lungs removed, lungs only (with
    // `occlusion_seen_only`, on the seen sources' test images when there are any).
    let occluded: Vec<usize> = {
        let on_seen: Vec<usize> = (0..todo.len())
            .filter(|&i| seen.contains(todo[i].row.source.as_str()))
            .collect();
        if cfg.occlusion_seen_only && !on_seen.is_empty() {
            on_seen
        } else {
            (0..todo.len()).collect()
        }
    };
    let (todo, positives, full): (Vec<Sample>, Vec<bool>, Vec<f64>) = {
        let keep: BTreeSet<usize> = occluded.iter().copied().collect();
        let mut t = Vec::with_capacity(keep.len());
        let (mut p, mut f) = (Vec::new(), Vec::new());
        for (i, s) in todo.into_iter().enumerate() {
            if keep.contains(&i) {
                t.push(s);
                p.push(positives[i]);
                f.push(full[i]);
            }
        }
        (t, p, f)
    };
    for (k, fill_kind) in cfg.fills.iter().enumerate() {
        let fill_name = fill_kind.as_str();
        let (mut removed_imgs, mut only_imgs, mut kept) = (Vec::new(), Vec::new(), Vec::new());
        let bar = Bar::new(progress, format!("occlusion ({fill_name})"), todo.len());
        for (i, s) in todo.iter().enumerate() {
            // Noise differs per image (seeded by the id) but is the same on every run.
            let fill = match fill_kind {
                FillKind::Noise => Fill::Noise {
                    seed: seed_of(&s.row.id) ^ k as u64,
                },
                FillKind::Mean => Fill::Mean,
            };
            let made = image_and_mask(manifest, s, column).and_then(|(img, mask)| {
                let removed = occlusion::remove_lungs(&img, &mask, fill)?;
                let only = occlusion::lungs_only(&img, &mask, fill)?;
                if let Some(out) = &cfg.out {
                    let name = format!("{}.png", cxr_core::outname::safe_stem(&s.row.id));
                    for (kind, occluded) in [("lungs_removed", &removed), ("lungs_only", &only)] {
                        let p = out.join("occlusion").join(fill_name).join(kind).join(&name);
                        if let Some(d) = p.parent() {
                            std::fs::create_dir_all(d).map_err(AuditError::io(d))?;
                        }
                        cxr_explain::render::write_png_grey(&p, occluded)?;
                    }
                }
                Ok((removed, only))
            });
            match made {
                Ok((removed, only)) => {
                    removed_imgs.push(removed);
                    only_imgs.push(only);
                    kept.push(i);
                }
                Err(e) => tracing::warn!(id = %s.row.id, "occlusion skipped: {e}"),
            }
            bar.inc(1);
        }
        let pos: Vec<bool> = kept.iter().map(|&i| positives[i]).collect();
        let full_k: Vec<f64> = kept.iter().map(|&i| full[i]).collect();
        let removed = cxr_explain::score_all(scorer, &removed_imgs, batch_size)
            .step("scoring lungs-removed images")?;
        let only = cxr_explain::score_all(scorer, &only_imgs, batch_size)
            .step("scoring lungs-only images")?;
        match (
            delong_figure(&full_k, &pos),
            delong_figure(&removed, &pos),
            delong_figure(&only, &pos),
        ) {
            (Some(f), Some(r), Some(o)) => evidence.occlusion.push(OcclusionEvidence {
                fill: fill_name.to_string(),
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
            _ => note(format!(
                "occlusion ({fill_name}) not run: both classes are needed"
            )),
        }
        laps.lap(&format!("occlusion ({fill_name})"));
    }

    // 4. Saliency: Grad-CAM lung energy, when explain ran (an empty map has no lung energy fraction).
    let mut galleries = Vec::new();
    if let Some(p) = &cfg.lung_energy {
        let rows = cxr_explain::read_energy_csv(p).step("lung energy")?;
        evidence.lung_energy = cxr_explain::mean_lung_energy(&rows).map(Figure::point);
        if !rows.is_empty() {
            evidence.mean_mask_area =
                Some(rows.iter().map(|r| r.mask_area).sum::<f64>() / rows.len() as f64);
        }
        let cells: Vec<f64> = rows.iter().filter_map(|r| r.lung_cells).collect();
        if !cells.is_empty() {
            evidence.lung_cells = Some(cells.iter().sum::<f64>() / cells.len() as f64);
        }
        evidence.saliency_maps = Some(rows.len());
        evidence.saliency_maps_usable =
            Some(rows.iter().filter(|r| r.lung_energy.is_some()).count());
        // `cxr explain` writes its galleries beside `lung_energy.csv`.
        galleries = galleries_in(&p.parent().unwrap_or(Path::new("")).join("gallery"));
    }

    // 4'. Without Grad-CAM evidence: occlusion sensitivity maps, which need only the scorer.
    if cfg.lung_energy.is_none() && cfg.saliency_images > 0 {
        galleries = occlusion_saliency(cfg, scorer, manifest, &todo, &mut evidence, progress)
            .step("occlusion saliency")?;
    }
    laps.lap("saliency maps");

    let verdict = cxr_explain::verdict(&evidence, &cfg.thresholds);
    let report = AuditReport {
        evidence: vec![evidence],
        verdicts: vec![verdict],
    };
    let mut outcome = AuditOutcome {
        report,
        probe: probe_result,
        notes,
        files: None,
        manifest: manifest_path.to_path_buf(),
        config: cfg.clone(),
        timings: Vec::new(),
    };
    if let Some(out) = &cfg.out {
        let audit_json = out.join("audit.json");
        cxr_explain::write_audit_json(&audit_json, &outcome.report).step("writing audit.json")?;
        let files = AuditFiles {
            dir: out.clone(),
            audit_json,
            report_html: out.join("report.html"),
            probe_json,
            galleries,
        };
        crate::report::write_report_html(&outcome, &files, None).step("writing report.html")?;
        outcome.files = Some(files);
    }
    if let Some(j) = journal {
        j.finish()?;
    }
    laps.lap("verdict and report");
    outcome.timings = laps.into_vec();
    Ok(outcome)
}

/// The outputs an audit writes into its folder: what starting afresh removes.
const AUDIT_OUTPUTS: [&str; 5] = [
    "audit.json",
    "report.html",
    "probe.json",
    "occlusion",
    "saliency",
];

/// The journal of an audit's output folder (`out/.resume/`), opened or reset (crate::resume).
fn open_journal(
    scorer: &dyn Scorer,
    manifest: &Manifest,
    manifest_path: &Path,
    cfg: &AuditConfig,
    out: &Path,
) -> Result<Journal> {
    let mut inputs = manifest.to_csv()?;
    inputs.extend_from_slice(manifest.base_dir.display().to_string().as_bytes());
    let key_cfg = AuditConfig {
        out: None,
        ..cfg.clone()
    };
    let key = RunKey::new("audit", scorer, &key_cfg, &inputs)?;
    let owned: Vec<PathBuf> = AUDIT_OUTPUTS.iter().map(|n| out.join(n)).collect();
    let read: Vec<&Path> = [
        Some(manifest_path),
        cfg.features.as_deref(),
        cfg.lung_energy.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    Journal::open(&out.join(".resume"), &key, &owned, &read)
}

/// The PNGs of a gallery folder, sorted (none when it does not exist).
pub fn galleries_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "png"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| AuditError::input(path, format!("serialising: {e}")))?;
    cxr_core::fsutil::write_atomic(path, &bytes)?;
    Ok(())
}

/// A stable 64-bit seed from an id (the first 8 bytes of its SHA-256).
fn seed_of(id: &str) -> u64 {
    let h = cxr_core::fsutil::sha256_bytes(id.as_bytes());
    u64::from_str_radix(&h[..16], 16).unwrap_or(0)
}

fn delong_figure(scores: &[f64], positives: &[bool]) -> Option<Figure> {
    cxr_eval::delong::delong(scores, positives, 0.95).map(|d| Figure::with_ci(d.auc, d.lo, d.hi))
}

/// Reads the images of `rows` and scores them in batches; with `features`, returns the scorer's pooled
/// features too.
fn score_rows(
    scorer: &dyn Scorer,
    rows: &[&ImageRow],
    batch_size: usize,
    features: bool,
    what: &str,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<(Vec<f64>, Vec<Vec<f32>>)> {
    let bar = Bar::new(progress, what.to_string(), rows.len());
    let (mut scores, mut feats) = (Vec::with_capacity(rows.len()), Vec::new());
    for chunk in rows.chunks(batch_size.max(1)) {
        let images: Vec<Grey8> = chunk
            .iter()
            .map(|r| cxr_explain::read_grey8(&r.path))
            .collect::<cxr_explain::Result<_>>()?;
        let s = scorer.score(&images, features)?;
        if s.scores.len() != images.len() {
            return Err(cxr_core::ScoreError::new(
                scorer.name(),
                format!("{} scores for {} images", s.scores.len(), images.len()),
            )
            .into());
        }
        scores.extend(s.scores);
        if features {
            feats.extend(s.features.unwrap_or_default());
        }
        bar.inc(chunk.len());
    }
    Ok((scores, feats))
}

/// Occlusion sensitivity maps of a few audit images (round-robin over source and class): their lung energy
/// into the evidence; with an output folder, `saliency/` (overlays, galleries, `lung_energy.csv`). Returns
/// the galleries written.
fn occlusion_saliency(
    cfg: &AuditConfig,
    scorer: &dyn Scorer,
    manifest: &Manifest,
    todo: &[Sample],
    evidence: &mut AuditEvidence,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<Vec<PathBuf>> {
    let column = cfg.column();
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
            if chosen.len() < cfg.saliency_images
                && let Some(s) = g.get(round)
            {
                chosen.push(*s);
            }
        }
        if chosen.len() == before || chosen.len() >= cfg.saliency_images {
            break;
        }
    }
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    let map_cfg = cxr_explain::OcclusionConfig {
        grid: cfg.saliency_grid,
        batch_size: cfg.batch_size,
        plan: cxr_explain::SaliencyPlan::with_tolerance(cfg.saliency_tolerance),
    };
    let dir = cfg.out.as_ref().map(|o| o.join("saliency"));
    let mut writer = match &dir {
        Some(d) => Some(ExplainWriter::new(d, ExplainConfig::default())?),
        None => None,
    };
    let mut rows = Vec::new();
    let bar = Bar::new(progress, "occlusion maps".into(), chosen.len());
    let t = std::time::Instant::now();
    let (mut passes, mut geometry, mut usable) = (0, None, 0);
    // A log line per map (a count, never a timer: the same lines on every run), with the estimate of the
    // time left, for logs where no bar is drawn.
    for (k, s) in chosen.iter().enumerate() {
        let item = cam_item(manifest, s, column)?;
        let m = cxr_explain::occlusion_map(scorer, &item.image, Some(&item.mask), &map_cfg)
            .step(format!("row {}", s.row.id))?;
        passes += m.passes;
        geometry = Some((m.patch, m.stride));
        let logit = m.logit;
        usable += usize::from(m.usable);
        let row = match &mut writer {
            Some(w) => w.add_with_map(&item, &m.heat, logit as f32, Some(m.cells.0))?,
            None => cxr_explain::energy_row(&item, &m.heat, logit as f32, Some(m.cells.0))?,
        };
        rows.push(row);
        bar.inc(1);
        tracing::info!(
            "audit: occlusion maps: {} ({} forward passes for {})",
            crate::progress::eta_line("maps", k + 1, chosen.len(), t.elapsed().as_secs_f64()),
            m.passes,
            s.row.id
        );
    }
    let passes = (passes as f64 / chosen.len() as f64).round() as usize;
    let seconds = (!cfg.scored_outside).then(|| t.elapsed().as_secs_f64() / chosen.len() as f64);
    let galleries = match writer {
        Some(w) => w.finish()?.galleries,
        None => Vec::new(),
    };
    evidence.lung_energy = cxr_explain::mean_lung_energy(&rows).map(Figure::point);
    evidence.mean_mask_area =
        Some(rows.iter().map(|r| r.mask_area).sum::<f64>() / rows.len() as f64);
    let cells: Vec<f64> = rows.iter().filter_map(|r| r.lung_cells).collect();
    if !cells.is_empty() {
        evidence.lung_cells = Some(cells.iter().sum::<f64>() / cells.len() as f64);
    }
    evidence.saliency_maps = Some(rows.len());
    evidence.saliency_maps_usable = Some(usable);
    evidence.saliency = Some(cxr_explain::SaliencyCost {
        method: "occlusion".into(),
        images: rows.len(),
        passes_per_map: passes,
        seconds_per_map: seconds,
        patch: geometry.map(|g| g.0),
        stride: geometry.map(|g| g.1),
    });
    tracing::info!(
        "audit: occlusion maps: {} images ({usable} usable), {passes} forward passes and {} per map",
        rows.len(),
        seconds.map_or("no time (scored outside)".into(), |s| format!("{s:.1} s"))
    );
    Ok(galleries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{MeanGrey, tiny_manifest};
    use cxr_core::Split;

    /// The tiny manifest with only some columns, as a user might write it by hand.
    fn hand_written(manifest: &Path, keep: &[&str], out: &Path) {
        let m = Manifest::read(manifest).unwrap();
        let mut rows = vec![keep.join(",")];
        for r in &m.records {
            let cells: Vec<String> = keep
                .iter()
                .map(|c| {
                    let v = r.get(c).unwrap_or_default();
                    if ["png8", "mask"].contains(c) {
                        m.resolve_cell(&v).display().to_string()
                    } else {
                        v
                    }
                })
                .collect();
            rows.push(cells.join(","));
        }
        std::fs::write(out, rows.join("\n") + "\n").unwrap();
    }

    #[test]
    fn every_missing_column_is_named_at_once_and_unused_ones_are_not_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let m = tiny_manifest(d);
        let cfg = AuditConfig {
            saliency_images: 0,
            ..Default::default()
        };
        // No split, no mask: the split is named, with what to do; the mask is not asked for (the shipped
        // lung UNet makes it, below).
        let p = d.join("no_split_no_mask.csv");
        hand_written(&m, &["id", "source", "label", "png8"], &p);
        let e = run_audit(&MeanGrey, &p, &cfg).unwrap_err();
        let AuditError::MissingColumns { columns, .. } = &e else {
            panic!("{e}");
        };
        let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(names, ["split"]);
        let msg = e.to_string();
        assert!(msg.contains("no_split_no_mask.csv"), "{msg}");
        assert!(msg.contains("`cxr manifest split`"), "{msg}");
        assert_eq!(msg.lines().count(), 1, "{msg}");
        // The crop column needs its mask and its geometry: every one named at once.
        let e = run_audit(
            &MeanGrey,
            &p,
            &AuditConfig {
                column: Some("crop".into()),
                ..cfg.clone()
            },
        )
        .unwrap_err()
        .to_string();
        for c in ["`split`", "`crop`", "`mask`", "`crop_x`", "`crop_h`"] {
            assert!(e.contains(c), "{c}: {e}");
        }
        assert!(e.contains("`cxr segment predict`"), "{e}");
        // A split column with no value is no split.
        let mut no_split = Manifest::read(&m).unwrap();
        no_split.records.iter_mut().for_each(|r| r.split = None);
        let e = run_audit_on(&MeanGrey, &no_split, &m, &cfg, &|_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("`split`"), "{e}");

        // Without view, path, format, sha256 or patient the audit runs, and writes nothing without `out`.
        let p = d.join("minimal.csv");
        hand_written(&m, &["id", "source", "label", "split", "png8", "mask"], &p);
        let done = run_audit(&MeanGrey, &p, &cfg).unwrap();
        assert!(done.files.is_none());
        assert!(!d.join("occlusion").exists());
        let full = run_audit(&MeanGrey, &m, &cfg).unwrap();
        assert_eq!(done.report, full.report);
        assert_eq!(done.report.evidence[0].occlusion.len(), 2);
        assert!(
            done.notes[0].contains("source probe not run"),
            "{:?}",
            done.notes
        );
    }

    #[test]
    fn without_a_mask_column_the_shipped_unet_makes_the_masks_segment_predict_makes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let m = tiny_manifest(d);
        let p = d.join("no_mask.csv");
        hand_written(&m, &["id", "source", "label", "split", "png8"], &p);
        let out = d.join("out");
        let cfg = AuditConfig {
            saliency_images: 0,
            out: Some(out.clone()),
            ..Default::default()
        };
        let shipped = run_audit(&MeanGrey, &p, &cfg).unwrap();
        assert!(
            shipped.notes[0].contains("shipped default lung UNet")
                && shipped.notes[0].contains("lung-masks"),
            "{:?}",
            shipped.notes
        );
        let html = std::fs::read_to_string(out.join("report.html")).unwrap();
        assert!(html.contains("shipped default lung UNet"));
        // The masks are those of `cxr segment predict` with no --weights: the same stage, the same UNet.
        let seg = cxr_segment::Segmenter::default_lung().unwrap();
        let direct = d.join("direct");
        cxr_segment::segment_records(
            &seg,
            read_manifest(&p, "png8").unwrap(),
            &direct,
            &cxr_segment::SegmentOptions::default(),
            &mut |_, _| {},
        )
        .unwrap();
        for i in 0..16 {
            let name = format!("masks/r{i}.png");
            let a = std::fs::read(out.join("lung-masks").join(&name)).unwrap();
            assert_eq!(a, std::fs::read(direct.join(&name)).unwrap(), "{name}");
        }
        // The audit of a manifest that carries those masks finds exactly the same, and so does the audit
        // that writes nothing (its masks in a temporary folder).
        let given = run_audit(
            &MeanGrey,
            &direct.join("manifest.csv"),
            &AuditConfig {
                out: None,
                ..cfg.clone()
            },
        )
        .unwrap();
        assert_eq!(given.report, shipped.report);
        assert!(!given.notes.iter().any(|n| n.contains("shipped")));
        let in_memory = run_audit(&MeanGrey, &p, &AuditConfig { out: None, ..cfg }).unwrap();
        assert_eq!(in_memory.report, shipped.report);
        assert!(in_memory.files.is_none() && !d.join("lung-masks").exists());
    }

    fn files_under(root: &Path) -> Vec<PathBuf> {
        cxr_core::fsutil::files_under(root).unwrap()
    }

    /// Hostile manifest ids on the audited rows: every occlusion PNG and saliency map stays under `out`,
    /// one file per row.
    #[test]
    fn hostile_ids_never_write_outside_out() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let m = tiny_manifest(d);
        let mut manifest = Manifest::read(&m).unwrap();
        let long = "Q".repeat(300);
        let hostile = [
            "../../x/y",
            "/tmp/abs",
            "..",
            "A",
            "a",
            "a b\\c",
            "con",
            long.as_str(),
        ];
        let test_rows = manifest
            .records
            .iter_mut()
            .filter(|r| r.split == Some(Split::Test));
        for (r, id) in test_rows.zip(hostile) {
            r.id = id.to_string();
        }
        let before = files_under(d);
        let out = d.join("deep/er/out");
        let cfg = AuditConfig {
            saliency_images: 8,
            saliency_grid: 4,
            out: Some(out.clone()),
            ..Default::default()
        };
        run_audit_on(&MeanGrey, &manifest, &m, &cfg, &|_| {}).unwrap();
        for p in files_under(d) {
            assert!(
                before.contains(&p) || p.starts_with(&out),
                "{} written outside {}",
                p.display(),
                out.display()
            );
        }
        let pngs = std::fs::read_dir(out.join("occlusion/noise/lungs_removed"))
            .unwrap()
            .count();
        assert_eq!(pngs, hostile.len());
    }

    /// `--split X` with no X rows and `--folds 0` are errors, not a run on other rows or no probe.
    #[test]
    fn an_empty_split_and_zero_folds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = tiny_manifest(dir.path());
        let cfg = AuditConfig {
            saliency_images: 0,
            split: Split::Val,
            ..Default::default()
        };
        let e = run_audit(&MeanGrey, &m, &cfg).unwrap_err().to_string();
        assert!(
            e.contains("`val`") && e.contains("--split") && e.contains("manifest.csv"),
            "{e}"
        );
        let e = run_audit(
            &MeanGrey,
            &m,
            &AuditConfig {
                folds: 0,
                split: Split::Test,
                ..cfg
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--folds") && e.contains("0 folds"), "{e}");
    }

    #[test]
    fn the_name_and_the_output_folder_are_the_configurations() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let m = tiny_manifest(d);
        let out = d.join("out");
        let cfg = AuditConfig {
            saliency_images: 2,
            saliency_grid: 4,
            name: Some("my model".into()),
            out: Some(out.clone()),
            ..Default::default()
        };
        // A scorer that knows its content hash: audit.json records it, through the renaming wrapper.
        let done = run_audit(&crate::test_support::Hashed(false), &m, &cfg).unwrap();
        assert_eq!(done.report.verdicts[0].model, "my model");
        assert_eq!(done.report.evidence[0].model, "my model");
        assert_eq!(
            done.report.evidence[0].model_sha256.as_deref(),
            Some("ab12")
        );
        let files = done.files.unwrap();
        let back: AuditReport =
            serde_json::from_slice(&std::fs::read(&files.audit_json).unwrap()).unwrap();
        assert_eq!(back, done.report);
        assert!(out.join("occlusion/noise/lungs_removed/r8.png").is_file());
        assert_eq!(files.galleries.len(), 2, "{:?}", files.galleries);
        let html = std::fs::read_to_string(&files.report_html).unwrap();
        let verdict = crate::report::verdict_headline(&done.report.verdicts[0]);
        assert!(
            html.contains(&format!("Audit of my model: {verdict}")),
            "{verdict}"
        );
        assert!(html.contains("saliency/gallery/"));
        // The same audit without an output folder finds the same (the occlusion maps' timing aside).
        let quiet = run_audit(
            &crate::test_support::Hashed(false),
            &m,
            &AuditConfig {
                out: None,
                ..cfg.clone()
            },
        )
        .unwrap();
        let strip = |r: &AuditReport| {
            let mut r = r.clone();
            r.evidence[0].saliency.as_mut().unwrap().seconds_per_map = None;
            r
        };
        assert_eq!(strip(&quiet.report), strip(&back));
    }
}
