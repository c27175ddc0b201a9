//! The audit of a model that cannot be exported, in two steps (`cxr audit prepare` / `cxr audit finish`).
//!
//! [`prepare`] runs the whole audit (and, with a world, the counterfactual confounder test) with a scorer
//! that only records what it is asked ([`Recorder`]): every image the audit needs scored (originals,
//! lungs-removed and lungs-only variants, occlusion-map patches, counterfactual pairs) lands in
//! `DIR/images/<id>.png`, listed in `DIR/to_score.csv` (`id,path`), and the configuration in
//! `DIR/prepare.json` ([`Prepared`]). The user scores the images with any framework into a CSV (`id,score`,
//! score = P(Covid-19); `scripts/score_to_score.py` does it for a PyTorch model). [`finish`] runs the same
//! audit again with a scorer that replays that table ([`Replay`]) and writes `DIR/audit.json`,
//! `DIR/report.html` (and `DIR/confounders/confounders.json`). An image's id is a hash of its pixels, so the
//! replay finds each score whatever order the audit asks in; what is asked never depends on the scores, so
//! both runs ask the same.
//!
//! The source probe needs the model's features, which a score table does not carry: give `features.csv` to
//! either step (it changes nothing that is asked, so [`finish`] may add it).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cxr_core::{Grey8, ScoreError, Scored, Scorer};
use serde::{Deserialize, Serialize};

use crate::config::AuditConfig;
use crate::confounders::{ConfounderConfig, ConfounderOutcome, run_confounder_test};
use crate::error::{AuditError, Result, StepExt};
use crate::run::{AuditOutcome, run_audit};

/// The version of `prepare.json` this crate writes and reads.
pub const PREPARED_VERSION: u32 = 1;

/// `prepare.json`: what `prepare` ran, so that `finish` runs the same. Paths are absolute, so `finish`
/// works from any folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prepared {
    pub version: u32,
    /// The model's training manifest.
    pub manifest: PathBuf,
    /// The audit's configuration (`out` is the prepared folder at `finish`).
    pub audit: AuditConfig,
    /// The confounder test's configuration, when `prepare` was given a world.
    pub confounders: Option<ConfounderConfig>,
    /// Images in `to_score.csv`.
    pub images: usize,
}

/// What [`prepare`] wrote.
#[derive(Debug, Clone)]
pub struct PrepareOutcome {
    /// `to_score.csv`.
    pub to_score: PathBuf,
    pub images: usize,
    /// What the user must know before scoring (e.g. no features: the source probe will not run).
    pub warnings: Vec<String>,
}

/// Options of [`finish`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FinishOptions {
    /// The model's name in `audit.json`; `None`: the one given to `prepare`, else `scored-outside`.
    pub name: Option<String>,
    /// The model's features (`id, f0 … fN`) for the source probe, replacing those given to `prepare`.
    pub features: Option<PathBuf>,
}

/// What [`finish`] found.
#[derive(Debug, Clone)]
pub struct FinishOutcome {
    pub audit: AuditOutcome,
    pub confounders: Option<ConfounderOutcome>,
}

/// The id of an image: its size and pixels, hashed.
pub fn image_id(img: &Grey8) -> String {
    let mut bytes = Vec::with_capacity(img.data.len() + 8);
    bytes.extend_from_slice(&img.width.to_le_bytes());
    bytes.extend_from_slice(&img.height.to_le_bytes());
    bytes.extend_from_slice(&img.data);
    cxr_core::fsutil::sha256_bytes(&bytes)[..20].to_string()
}

/// Records every image it is asked to score as a PNG under `dir/images/`; answers 0.5 (the audit's path
/// never depends on the answers).
pub struct Recorder {
    name: String,
    dir: PathBuf,
    seen: Mutex<BTreeSet<String>>,
}

impl Recorder {
    pub fn new(name: &str, dir: &Path) -> Result<Self> {
        let images = dir.join("images");
        std::fs::create_dir_all(&images).map_err(AuditError::io(&images))?;
        Ok(Self {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            seen: Mutex::new(BTreeSet::new()),
        })
    }

    /// Writes `to_score.csv` (`id,path`, paths relative to the folder) and returns the number of images.
    pub fn write_list(&self) -> Result<usize> {
        let p = self.dir.join("to_score.csv");
        let seen = self
            .seen
            .lock()
            .map_err(|_| AuditError::config("recorder", "lock poisoned"))?;
        let csv_err = |e: csv::Error| AuditError::input(&p, e.to_string());
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(["id", "path"]).map_err(csv_err)?;
        for id in seen.iter() {
            w.write_record([id.as_str(), &format!("images/{id}.png")])
                .map_err(csv_err)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| AuditError::input(&p, e.to_string()))?;
        cxr_core::fsutil::write_atomic(&p, &bytes)?;
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
                .insert(id.clone());
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
pub struct Replay {
    name: String,
    file: PathBuf,
    scores: HashMap<String, f64>,
}

impl Replay {
    /// Reads `id,score` from `path`; every id of `expected` must be there once, with a finite score in
    /// [0, 1]. Errors name the file and the first bad id.
    pub fn read(name: &str, path: &Path, expected: &[String]) -> Result<Self> {
        let bad = |m: String| AuditError::input(path, m);
        let mut rdr = csv::Reader::from_path(path)
            .map_err(|e| bad(format!("cannot read the scores: {e}")))?;
        let headers = rdr
            .headers()
            .map_err(|e| bad(format!("no header: {e}")))?
            .clone();
        let col = |n: &str| headers.iter().position(|h| h.trim() == n);
        let (Some(ic), Some(sc)) = (col("id"), col("score")) else {
            return Err(bad("needs the columns `id,score`".into()));
        };
        let mut scores = HashMap::new();
        for rec in rdr.records() {
            let rec = rec.map_err(|e| bad(format!("malformed CSV: {e}")))?;
            let id = rec.get(ic).unwrap_or("").trim().to_string();
            let cell = rec.get(sc).unwrap_or("").trim();
            let v: f64 = cell
                .parse()
                .map_err(|_| bad(format!("id {id}: score `{cell}` is not a number")))?;
            if !v.is_finite() || !(0.0..=1.0).contains(&v) {
                return Err(bad(format!(
                    "id {id}: score {v} is not a probability in [0, 1]"
                )));
            }
            if scores.insert(id.clone(), v).is_some() {
                return Err(bad(format!("id {id} appears twice")));
            }
        }
        if let Some(missing) = expected.iter().find(|id| !scores.contains_key(*id)) {
            return Err(bad(format!(
                "id {missing} of to_score.csv has no score ({} of {} scored)",
                expected
                    .iter()
                    .filter(|id| scores.contains_key(*id))
                    .count(),
                expected.len()
            )));
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

/// Absolute, so that `finish` reads the same files from any working directory.
fn absolute(p: &Path) -> PathBuf {
    cxr_core::absolute_path(p)
}

/// Runs the audit (and the confounder test) of `prepared` with `scorer`, writing into `out` (none: nothing
/// but what the scorer records).
fn run_all(
    prepared: &Prepared,
    scorer: &dyn Scorer,
    out: Option<&Path>,
) -> Result<(AuditOutcome, Option<ConfounderOutcome>)> {
    let audit_cfg = AuditConfig {
        out: out.map(Path::to_path_buf),
        scored_outside: true,
        ..prepared.audit.clone()
    };
    let audit = run_audit(scorer, &prepared.manifest, &audit_cfg)?;
    let confounders = match &prepared.confounders {
        Some(c) => {
            let cfg = ConfounderConfig {
                out: out.map(|o| o.join("confounders")),
                ..c.clone()
            };
            Some(run_confounder_test(scorer, &prepared.manifest, &cfg).step("confounder test")?)
        }
        None => None,
    };
    Ok((audit, confounders))
}

/// Step one: records every image the audit (and, with `confounders`, the confounder test) of the model
/// trained on `manifest` asks about into `dir`, with `to_score.csv` and `prepare.json`.
pub fn prepare(
    manifest: &Path,
    dir: &Path,
    audit: &AuditConfig,
    confounders: Option<&ConfounderConfig>,
) -> Result<PrepareOutcome> {
    std::fs::create_dir_all(dir).map_err(AuditError::io(dir))?;
    let column = audit.column().to_string();
    let mut prepared = Prepared {
        version: PREPARED_VERSION,
        manifest: absolute(manifest),
        audit: AuditConfig {
            column: Some(column.clone()),
            features: audit.features.as_deref().map(absolute),
            lung_energy: audit.lung_energy.as_deref().map(absolute),
            out: None,
            ..audit.clone()
        },
        confounders: confounders.map(|c| ConfounderConfig {
            world: absolute(&c.world),
            column: Some(column.clone()),
            out: None,
            ..c.clone()
        }),
        images: 0,
    };
    let recorder = Recorder::new("prepare", dir)?;
    run_all(&prepared, &recorder, None)?;
    prepared.images = recorder.write_list()?;
    let p = dir.join("prepare.json");
    crate::run::write_json(&p, &prepared)?;
    let mut warnings = Vec::new();
    if prepared.audit.features.is_none() {
        warnings.push(
            "no features given: the source probe (can the model's features tell the hospitals apart?) will \
             not run. Export the model's pooled features as features.csv (`id, f0 … fN`) and give \
             `--features features.csv` to `audit finish`"
                .to_string(),
        );
    }
    for w in &warnings {
        tracing::warn!("audit prepare: {w}");
    }
    Ok(PrepareOutcome {
        to_score: dir.join("to_score.csv"),
        images: prepared.images,
        warnings,
    })
}

/// Reads `prepare.json` from a prepared folder.
pub fn read_prepared(dir: &Path) -> Result<Prepared> {
    let p = dir.join("prepare.json");
    let bytes = std::fs::read(&p)
        .map_err(|e| AuditError::input(&p, format!("not a folder from `audit prepare` ({e})")))?;
    let prepared: Prepared = serde_json::from_slice(&bytes).map_err(|e| {
        AuditError::input(
            &p,
            format!("malformed or from an older version ({e}): run `audit prepare` again"),
        )
    })?;
    if prepared.version != PREPARED_VERSION {
        return Err(AuditError::input(
            &p,
            format!(
                "written by another version (prepare.json version {}, this one reads {PREPARED_VERSION}): run `audit prepare` again",
                prepared.version
            ),
        ));
    }
    Ok(prepared)
}

/// Step two: replays the scores (`id,score` for every id of `to_score.csv`) through the prepared audit
/// and writes `audit.json`, `report.html` (and `confounders/`) into `dir`.
pub fn finish(dir: &Path, scores: &Path, opts: &FinishOptions) -> Result<FinishOutcome> {
    let mut prepared = read_prepared(dir)?;
    let list = dir.join("to_score.csv");
    let mut rdr =
        csv::Reader::from_path(&list).map_err(|e| AuditError::input(&list, e.to_string()))?;
    let expected: Vec<String> = rdr
        .records()
        .map(|r| Ok(r?.get(0).unwrap_or("").to_string()))
        .collect::<std::result::Result<_, csv::Error>>()
        .map_err(|e| AuditError::input(&list, e.to_string()))?;
    if let Some(f) = &opts.features {
        prepared.audit.features = Some(absolute(f));
    }
    let name = opts
        .name
        .clone()
        .or_else(|| prepared.audit.name.clone())
        .unwrap_or_else(|| "scored-outside".into());
    prepared.audit.name = None;
    let replay = Replay::read(&name, scores, &expected)?;
    let (audit, confounders) = run_all(&prepared, &replay, Some(dir))?;
    if let (Some(c), Some(files)) = (&confounders, &audit.files) {
        crate::report::write_report_html(&audit, files, Some(c)).step("writing report.html")?;
    }
    Ok(FinishOutcome { audit, confounders })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::tiny_manifest;

    #[test]
    fn bad_score_tables_name_the_file_and_the_first_bad_id() {
        let dir = tempfile::tempdir().unwrap();
        let expected = vec!["a".to_string(), "b".to_string()];
        let check = |body: &str, want: &str| {
            let p = dir.path().join("s.csv");
            std::fs::write(&p, body).unwrap();
            let e = Replay::read("m", &p, &expected).err().unwrap().to_string();
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

    /// The model's pooled features as `features.csv`, as a user would export them.
    fn features_csv(scorer: &dyn Scorer, manifest: &Path, out: &Path) {
        let m = cxr_core::Manifest::read(manifest).unwrap();
        let imgs: Vec<Grey8> = m
            .records
            .iter()
            .map(|r| cxr_explain::read_grey8(&m.resolve_cell(&r.get("png8").unwrap())).unwrap())
            .collect();
        let feats = scorer.score(&imgs, true).unwrap().features.unwrap();
        let mut f = String::from("id");
        for k in 0..feats[0].len() {
            f.push_str(&format!(",f{k}"));
        }
        f.push('\n');
        for (r, v) in m.records.iter().zip(&feats) {
            f.push_str(&r.id);
            for x in v {
                f.push_str(&format!(",{x}"));
            }
            f.push('\n');
        }
        std::fs::write(out, f).unwrap();
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
        let fp = d.join("features.csv");
        features_csv(&scorer, &m, &fp);
        let cfg = AuditConfig {
            column: Some("png8".into()),
            features: Some(fp.clone()),
            saliency_images: 2,
            saliency_grid: 4,
            ..Default::default()
        };

        // The direct audit.
        let direct = run_audit(
            &scorer,
            &m,
            &AuditConfig {
                out: Some(d.join("direct")),
                ..cfg.clone()
            },
        )
        .unwrap();
        assert!(d.join("direct/audit.json").is_file());
        assert!(d.join("direct/report.html").is_file());

        // Prepare without features (the warning says how to add them), score the list with the same model
        // (as a user's script would), finish with the features.
        let prep = d.join("prep");
        let prepared = prepare(
            &m,
            &prep,
            &AuditConfig {
                features: None,
                ..cfg.clone()
            },
            None,
        )
        .unwrap();
        assert!(
            prepared.warnings[0].contains("source probe")
                && prepared.warnings[0].contains("--features"),
            "{:?}",
            prepared.warnings
        );
        let typed = read_prepared(&prep).unwrap();
        assert_eq!(typed.audit.saliency_grid, 4);
        assert!(typed.manifest.is_absolute());
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
        assert_eq!(n, prepared.images);
        let sp = d.join("scores.csv");
        std::fs::write(&sp, scores).unwrap();
        let opts = FinishOptions {
            name: None,
            features: Some(fp),
        };
        let back = finish(&prep, &sp, &opts).unwrap().audit.report;
        assert!(prep.join("report.html").is_file());
        assert_eq!(back.verdicts[0].model, "scored-outside");

        let (a, b) = (&direct.report.verdicts[0], &back.verdicts[0]);
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
        let (ea, eb) = (&direct.report.evidence[0], &back.evidence[0]);
        assert!(!ea.source_probe.is_empty() && !eb.source_probe.is_empty());
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
        let e = finish(&prep, &sp, &opts).unwrap_err().to_string();
        assert!(e.contains("has no score"), "{e}");
    }
}
