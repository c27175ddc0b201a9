//! `cxr audit prepare` and `cxr audit finish`: the audit of a model that cannot be exported.
//!
//! `prepare` runs the whole audit (and, with `--world`, the counterfactual confounder test) with a scorer that
//! only records what it is asked: every image the audit needs scored (originals, lungs-removed and
//! lungs-only variants, occlusion-map patches, counterfactual pairs) lands in `DIR/images/<id>.png`, listed
//! in `DIR/to_score.csv` (`id,path`). The user scores them with any framework into a CSV (`id,score`,
//! score = P(Covid-19); `scripts/score_to_score.py` does it for a PyTorch model). `finish` runs the same
//! audit again with a scorer that replays that table and writes `DIR/audit.json` (and
//! `DIR/confounders/confounders.json`). An image's id is a hash of its pixels, so the replay finds each score
//! whatever order the audit asks in; what is asked never depends on the scores, so both runs ask the same.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use cxr_core::{Grey8, ScoreError, Scored, Scorer};

use crate::confounders::AuditConfoundersArgs;
use crate::explain::{AuditArgs, audit_with, print_verdict};

/// The two steps.
#[derive(Debug, Subcommand)]
pub enum AuditStep {
    /// Write every image the audit needs scored, and `to_score.csv` (`id,path`).
    Prepare(PrepareArgs),
    /// Read the scores (`id,score`) and write `audit.json`.
    Finish(FinishArgs),
}

#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// The model's training manifest (with `split`, the image column and `mask`).
    #[arg(long)]
    manifest: PathBuf,
    /// Folder for the images, `to_score.csv` and (after `finish`) `audit.json`.
    #[arg(long)]
    out: PathBuf,
    /// The image column the model reads.
    #[arg(long, default_value = "png8")]
    column: String,
    /// The synthetic world the manifest comes from (its folder or `world.json`): adds the counterfactual pairs.
    #[arg(long)]
    world: Option<PathBuf>,
    /// Counterfactual pairs per confounder and direction (with `--world`).
    #[arg(long, default_value_t = 24)]
    pairs: usize,
    /// Frozen features of the model (`id, f0 … fN`) for the source probe; without them the probe is not run.
    #[arg(long)]
    features: Option<PathBuf>,
    /// Split the occlusion tests run on.
    #[arg(long, default_value = "test")]
    split: String,
    /// Occlusion fills.
    #[arg(long, default_value = "mean,noise")]
    fills: String,
    /// Occlusion sensitivity maps on this many test images (0: none).
    #[arg(long, default_value_t = 8)]
    saliency_images: usize,
    /// Occlusion map positions per side (at most `grid² + 1` images per map).
    #[arg(long, default_value_t = 24)]
    saliency_grid: usize,
}

#[derive(Debug, Args)]
pub struct FinishArgs {
    /// The folder `audit prepare` wrote.
    #[arg(long)]
    dir: PathBuf,
    /// The scores: a CSV with `id,score` (P(Covid-19) in [0, 1]) for every id of `to_score.csv`.
    #[arg(long)]
    scores: PathBuf,
    /// The model's name in `audit.json`.
    #[arg(long, default_value = "scored-outside")]
    name: String,
}

pub fn run(step: AuditStep) -> Result<()> {
    match step {
        AuditStep::Prepare(a) => prepare(a),
        AuditStep::Finish(a) => finish(a),
    }
}

/// The id of an image: its size and pixels, hashed.
pub(crate) fn image_id(img: &Grey8) -> String {
    let mut bytes = Vec::with_capacity(img.data.len() + 8);
    bytes.extend_from_slice(&img.width.to_le_bytes());
    bytes.extend_from_slice(&img.height.to_le_bytes());
    bytes.extend_from_slice(&img.data);
    cxr_core::fsutil::sha256_bytes(&bytes)[..20].to_string()
}

/// Records every image it is asked to score as a PNG under `dir/images/`; answers 0.5 (the audit's path
/// never depends on the answers).
pub(crate) struct Recorder {
    name: String,
    dir: PathBuf,
    seen: Mutex<BTreeMap<String, ()>>,
}

impl Recorder {
    pub(crate) fn new(name: &str, dir: &Path) -> Result<Self> {
        let images = dir.join("images");
        std::fs::create_dir_all(&images)
            .with_context(|| format!("creating {}", images.display()))?;
        Ok(Self {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            seen: Mutex::new(BTreeMap::new()),
        })
    }

    /// Writes `to_score.csv` (`id,path`, paths relative to the folder) and returns the number of images.
    pub(crate) fn write_list(&self) -> Result<usize> {
        let seen = self
            .seen
            .lock()
            .map_err(|_| anyhow::anyhow!("internal: recorder lock"))?;
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(["id", "path"])?;
        for id in seen.keys() {
            w.write_record([id.as_str(), &format!("images/{id}.png")])?;
        }
        let p = self.dir.join("to_score.csv");
        cxr_core::fsutil::write_atomic(&p, &w.into_inner()?)
            .with_context(|| format!("writing {}", p.display()))?;
        Ok(seen.len())
    }
}

impl Scorer for Recorder {
    fn name(&self) -> &str {
        &self.name
    }
    fn input_size(&self) -> usize {
        0
    }
    fn has_features(&self) -> bool {
        false
    }
    fn score(&self, images: &[Grey8], _features: bool) -> Result<Scored, ScoreError> {
        for img in images {
            let id = image_id(img);
            let new = self
                .seen
                .lock()
                .map_err(|_| ScoreError::new(&self.name, "recorder lock"))?
                .insert(id.clone(), ())
                .is_none();
            if new {
                let p = self.dir.join("images").join(format!("{id}.png"));
                cxr_explain::render::write_png_grey(&p, img)
                    .map_err(|e| ScoreError::new(&self.name, e.to_string()))?;
            }
        }
        Ok(Scored {
            scores: vec![0.5; images.len()],
            features: None,
        })
    }
}

/// Replays a score table: each image's score is looked up by its id.
pub(crate) struct Replay {
    name: String,
    file: PathBuf,
    scores: HashMap<String, f64>,
}

impl Replay {
    /// Reads `id,score` from `path`; every id of `expected` must be there once, with a finite score in
    /// [0, 1]. Errors name the file and the first bad id.
    pub(crate) fn read(name: &str, path: &Path, expected: &[String]) -> Result<Self> {
        let mut rdr = csv::Reader::from_path(path)
            .with_context(|| format!("{}: cannot read the scores", path.display()))?;
        let headers = rdr
            .headers()
            .with_context(|| format!("{}: no header", path.display()))?
            .clone();
        let col = |n: &str| headers.iter().position(|h| h.trim() == n);
        let (Some(ic), Some(sc)) = (col("id"), col("score")) else {
            bail!("{}: needs the columns `id,score`", path.display());
        };
        let mut scores = HashMap::new();
        for rec in rdr.records() {
            let rec = rec.with_context(|| format!("{}: malformed CSV", path.display()))?;
            let id = rec.get(ic).unwrap_or("").trim().to_string();
            let cell = rec.get(sc).unwrap_or("").trim();
            let v: f64 = cell.parse().map_err(|_| {
                anyhow::anyhow!(
                    "{}: id {id}: score `{cell}` is not a number",
                    path.display()
                )
            })?;
            if !v.is_finite() || !(0.0..=1.0).contains(&v) {
                bail!(
                    "{}: id {id}: score {v} is not a probability in [0, 1]",
                    path.display()
                );
            }
            if scores.insert(id.clone(), v).is_some() {
                bail!("{}: id {id} appears twice", path.display());
            }
        }
        if let Some(missing) = expected.iter().find(|id| !scores.contains_key(*id)) {
            bail!(
                "{}: id {missing} of to_score.csv has no score ({} of {} scored)",
                path.display(),
                expected
                    .iter()
                    .filter(|id| scores.contains_key(*id))
                    .count(),
                expected.len()
            );
        }
        Ok(Self {
            name: name.to_string(),
            file: path.to_path_buf(),
            scores,
        })
    }
}

impl Scorer for Replay {
    fn name(&self) -> &str {
        &self.name
    }
    fn input_size(&self) -> usize {
        0
    }
    fn has_features(&self) -> bool {
        false
    }
    fn score(&self, images: &[Grey8], _features: bool) -> Result<Scored, ScoreError> {
        let scores = images
            .iter()
            .map(|img| {
                let id = image_id(img);
                self.scores.get(&id).copied().ok_or_else(|| {
                    ScoreError::new(
                        self.file.display().to_string(),
                        format!("no score for image {id}: was to_score.csv made by this `audit prepare`?"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Scored {
            scores,
            features: None,
        })
    }
}

#[derive(Parser)]
struct AuditCli {
    #[command(flatten)]
    args: AuditArgs,
}

/// What `prepare` ran, so that `finish` runs the same (`prepare.json`).
#[derive(serde::Serialize, serde::Deserialize)]
struct Prepared {
    column: String,
    audit_argv: Vec<String>,
    confounders_argv: Option<Vec<String>>,
    images: usize,
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The audit's arguments for a prepared folder; `--model DIR` only names it (the scorer is given).
fn audit_argv(a: &PrepareArgs, out: &Path) -> Vec<String> {
    let mut v: Vec<String> = [
        "audit",
        "--model",
        &s(&a.out),
        "--column",
        &a.column,
        "--manifest",
        &s(&a.manifest),
        "--split",
        &a.split,
        "--fills",
        &a.fills,
        "--saliency-images",
        &a.saliency_images.to_string(),
        "--saliency-grid",
        &a.saliency_grid.to_string(),
        "--out",
        &s(out),
    ]
    .map(String::from)
    .to_vec();
    if let Some(f) = &a.features {
        v.extend(["--features".to_string(), s(f)]);
    }
    v
}

fn confounders_argv(a: &PrepareArgs, world: &Path, out: &Path) -> Vec<String> {
    [
        "audit-confounders",
        "--model",
        &s(&a.out),
        "--world",
        &s(world),
        "--manifest",
        &s(&a.manifest),
        "--pairs",
        &a.pairs.to_string(),
        "--out",
        &s(out),
    ]
    .map(String::from)
    .to_vec()
}

/// Runs the audit (and the confounder test) with `scorer`; `out` replaces the output folders.
fn run_all(p: &Prepared, scorer: &dyn Scorer, out: &Path) -> Result<cxr_explain::AuditReport> {
    let mut argv = p.audit_argv.clone();
    if let Some(i) = argv.iter().position(|a| a == "--out") {
        argv[i + 1] = s(out);
    }
    let audit = AuditCli::try_parse_from(&argv).context("audit: prepared arguments")?;
    let report = audit_with(&audit.args, scorer, &p.column)?;
    if let Some(cargv) = &p.confounders_argv {
        let mut cargv = cargv.clone();
        if let Some(i) = cargv.iter().position(|a| a == "--out") {
            cargv[i + 1] = s(&out.join("confounders"));
        }
        let args = AuditConfoundersArgs::try_parse_from(&cargv)
            .context("audit-confounders: prepared arguments")?;
        crate::confounders::audit_confounders_with(&args, scorer, &p.column)?;
    }
    Ok(report)
}

fn prepare(a: PrepareArgs) -> Result<()> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let scratch = a.out.join(".prepare");
    let prepared = Prepared {
        column: a.column.clone(),
        audit_argv: audit_argv(&a, &a.out),
        confounders_argv: a
            .world
            .as_ref()
            .map(|w| confounders_argv(&a, w, &a.out.join("confounders"))),
        images: 0,
    };
    let recorder = Recorder::new("prepare", &a.out)?;
    let run = run_all(&prepared, &recorder, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    run.context("audit prepare")?;
    let n = recorder.write_list()?;
    let prepared = Prepared {
        images: n,
        ..prepared
    };
    let p = a.out.join("prepare.json");
    cxr_core::fsutil::write_atomic(&p, &serde_json::to_vec_pretty(&prepared)?)
        .with_context(|| format!("writing {}", p.display()))?;
    println!(
        "audit prepare: {n} images to score -> {} (then: cxr audit finish --dir {} --scores S.csv)",
        a.out.join("to_score.csv").display(),
        a.out.display()
    );
    Ok(())
}

fn finish(a: FinishArgs) -> Result<()> {
    let p = a.dir.join("prepare.json");
    let prepared: Prepared = serde_json::from_slice(
        &std::fs::read(&p)
            .with_context(|| format!("{}: not a folder from `audit prepare`", p.display()))?,
    )
    .with_context(|| format!("{}: malformed", p.display()))?;
    let list = a.dir.join("to_score.csv");
    let mut rdr =
        csv::Reader::from_path(&list).with_context(|| format!("reading {}", list.display()))?;
    let expected: Vec<String> = rdr
        .records()
        .map(|r| Ok(r?.get(0).unwrap_or("").to_string()))
        .collect::<Result<_, csv::Error>>()
        .with_context(|| format!("reading {}", list.display()))?;
    let replay = Replay::read(&a.name, &a.scores, &expected)?;
    let report = run_all(&prepared, &replay, &a.dir).context("audit finish")?;
    print_verdict(&report, &a.dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_score_tables_name_the_file_and_the_first_bad_id() {
        let dir = tempfile::tempdir().unwrap();
        let expected = vec!["a".to_string(), "b".to_string()];
        let check = |body: &str, want: &str| {
            let p = dir.path().join("s.csv");
            std::fs::write(&p, body).unwrap();
            let e = format!("{:#}", Replay::read("m", &p, &expected).err().unwrap());
            assert!(e.contains("s.csv") && e.contains(want), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        };
        check("id,score\na,0.5\n", "id b of to_score.csv has no score");
        check("id,score\na,0.5\na,0.4\nb,0.1\n", "id a appears twice");
        check("id,score\na,NaN\nb,0.1\n", "id a: score NaN");
        check(
            "id,score\na,0.5\nb,1.5\n",
            "id b: score 1.5 is not a probability",
        );
        check("id,score\na,x\nb,1\n", "id a: score `x` is not a number");
        check("name,p\na,0.5\n", "needs the columns `id,score`");
        let p = dir.path().join("ok.csv");
        std::fs::write(&p, "id,score\nb,1\na,0\n").unwrap();
        assert!(Replay::read("m", &p, &expected).is_ok());
    }

    /// A tiny two-source manifest (png8 + mask on disk, train and test rows).
    fn tiny_manifest(dir: &Path) -> PathBuf {
        use cxr_core::{ImageFormat, Label, ManifestRecord, SourceId, Split};
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
            extra.insert("png8".to_string(), s(&ip));
            extra.insert("mask".to_string(), s(&mp));
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
        cxr_core::Manifest::new(recs).write(&m).unwrap();
        m
    }

    #[derive(Parser)]
    struct StepCli {
        #[command(subcommand)]
        step: AuditStep,
    }

    #[test]
    fn prepare_and_finish_with_our_models_scores_match_the_direct_audit() {
        use candle_core::Device;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let m = tiny_manifest(d);
        let model = cxr_model::Classifier::new(
            &cxr_model::Arch::resnet50(),
            cxr_model::Mode::Frozen,
            3,
            &Device::Cpu,
        )
        .unwrap();
        let scorer = cxr_model::ClassifierScorer::new(model, "ours", 32);
        // The model's features, for the source probe of both paths.
        let manifest = cxr_core::Manifest::read(&m).unwrap();
        let imgs: Vec<Grey8> = manifest
            .records
            .iter()
            .map(|r| cxr_explain::read_grey8(&d.join(r.get("png8").unwrap())).unwrap())
            .collect();
        let feats = scorer.score(&imgs, true).unwrap().features.unwrap();
        let mut f = String::from("id");
        for k in 0..feats[0].len() {
            f.push_str(&format!(",f{k}"));
        }
        f.push('\n');
        for (r, v) in manifest.records.iter().zip(&feats) {
            f.push_str(&r.id);
            for x in v {
                f.push_str(&format!(",{x}"));
            }
            f.push('\n');
        }
        let fp = d.join("features.csv");
        std::fs::write(&fp, f).unwrap();
        let common = [
            "--manifest",
            &s(&m),
            "--column",
            "png8",
            "--features",
            &s(&fp),
            "--fills",
            "mean,noise",
            "--saliency-images",
            "2",
            "--saliency-grid",
            "4",
        ];

        // The direct audit.
        let mut argv = vec!["audit", "--model", "ours"];
        argv.extend(common);
        let direct_out = s(&d.join("direct"));
        argv.extend(["--out", &direct_out]);
        let direct = audit_with(&AuditCli::parse_from(&argv).args, &scorer, "png8").unwrap();

        // Prepare, score the list with the same model (as a user's script would), finish.
        let prep = d.join("prep");
        let mut argv = vec!["x", "prepare", "--out", prep.to_str().unwrap()];
        argv.extend(common.iter().filter(|a| **a != "--column" && **a != "png8"));
        run(StepCli::parse_from(&argv).step).unwrap();
        let mut rdr = csv::Reader::from_path(prep.join("to_score.csv")).unwrap();
        let mut scores = String::from("id,score\n");
        let mut n = 0;
        for r in rdr.records() {
            let r = r.unwrap();
            let img = cxr_explain::read_grey8(&prep.join(&r[1])).unwrap();
            let v = scorer.score(&[img], false).unwrap().scores[0];
            scores.push_str(&format!("{},{v:.17}\n", &r[0]));
            n += 1;
        }
        // Originals, two occlusions x two fills, two maps of 17 passes (some patches may coincide).
        assert!(n > 8 + 8 * 4, "{n} images to score");
        let sp = d.join("scores.csv");
        std::fs::write(&sp, scores).unwrap();
        run(StepCli::parse_from([
            "x",
            "finish",
            "--dir",
            prep.to_str().unwrap(),
            "--scores",
            sp.to_str().unwrap(),
        ])
        .step)
        .unwrap();
        let back: cxr_explain::AuditReport =
            serde_json::from_slice(&std::fs::read(prep.join("audit.json")).unwrap()).unwrap();

        let (a, b) = (&direct.verdicts[0], &back.verdicts[0]);
        assert_eq!(a.verdict, b.verdict);
        assert_eq!(a.tests.len(), b.tests.len());
        let close = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) => (x - y).abs() < 1e-6,
            (x, y) => x == y,
        };
        for (t, u) in a.tests.iter().zip(&b.tests) {
            assert_eq!((&t.test, t.status), (&u.test, u.status), "{t:?} vs {u:?}");
            assert!(
                close(t.figure, u.figure) && close(t.ci_low, u.ci_low),
                "{t:?} vs {u:?}"
            );
        }
        let (ea, eb) = (&direct.evidence[0], &back.evidence[0]);
        assert_eq!(ea.occlusion.len(), 2);
        for (x, y) in ea.occlusion.iter().zip(&eb.occlusion) {
            assert!(close(
                Some(x.lungs_removed.value),
                Some(y.lungs_removed.value)
            ));
            assert!(close(Some(x.lungs_only.value), Some(y.lungs_only.value)));
            assert!(close(x.lungs_removed_p, y.lungs_removed_p));
        }
        assert!(close(
            ea.lung_energy.map(|f| f.value),
            eb.lung_energy.map(|f| f.value)
        ));
        assert_eq!(ea.saliency.as_ref().unwrap().passes_per_map, 17);
        // A score table that misses an id is refused before any audit runs.
        std::fs::write(&sp, "id,score\n").unwrap();
        let e = run(StepCli::parse_from([
            "x",
            "finish",
            "--dir",
            prep.to_str().unwrap(),
            "--scores",
            sp.to_str().unwrap(),
        ])
        .step)
        .unwrap_err();
        assert!(format!("{e:#}").contains("has no score"), "{e:#}");
    }

    #[test]
    fn a_manifest_without_split_mask_or_column_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let m = tiny_manifest(d);
        let manifest = cxr_core::Manifest::read(&m).unwrap();
        let recorder = Recorder::new("r", &d.join("rec")).unwrap();
        let out = d.join("o");
        let audit = |path: &Path, column: &str| {
            let argv = [
                "audit",
                "--model",
                "x",
                "--manifest",
                path.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ];
            format!(
                "{:#}",
                audit_with(&AuditCli::parse_from(argv).args, &recorder, column).unwrap_err()
            )
        };
        let mut no_split = manifest.clone();
        no_split.records.iter_mut().for_each(|r| r.split = None);
        let p = d.join("no_split.csv");
        no_split.write(&p).unwrap();
        let e = audit(&p, "png8");
        assert!(
            e.contains("no_split.csv") && e.contains("no `split` column"),
            "{e}"
        );
        let e = audit(&m, "crop");
        assert!(
            e.contains("manifest.csv") && e.contains("no `crop` column"),
            "{e}"
        );
        let mut no_mask = manifest.clone();
        no_mask.extra_columns.retain(|c| c != "mask");
        no_mask.records.iter_mut().for_each(|r| {
            r.extra.remove("mask");
        });
        let p = d.join("no_mask.csv");
        no_mask.write(&p).unwrap();
        let e = audit(&p, "png8");
        assert!(
            e.contains("no_mask.csv") && e.contains("no `mask` column"),
            "{e}"
        );
    }
}
