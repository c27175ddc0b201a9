//! Resuming a killed `score` or `audit`, and one model's outputs per folder (issue 31).
//!
//! Every output folder (an audit's `--out`, a score's predictions file) gets a journal folder holding a key
//! file, `key.json` ([`RunKey`]: the model's content hash, the hashes of the configuration and of the
//! inputs), and one file per scorer call, `calls/<sha256 of the batch>.bin`, written atomically as soon as
//! the call returns. A call file is named by the content of the batch it scored (every image's size and
//! pixels, and whether features were asked for), so a rerun finds each answer whatever order the work is
//! done in, and a changed image is never answered from the journal.
//!
//! Rules ([`Journal::open`]):
//! - the key file equals this run's key **and** the model has a content hash ([`Scorer::model_sha256`]):
//!   resume; batches already in the journal are not scored again;
//! - anything else (another model, another configuration, other inputs, no key file, a model without a
//!   content hash, whose identity cannot be proved): start afresh. The outputs this run writes (the
//!   `owned` paths) and the journal are removed *before* the new key is written and before anything else
//!   is, so a folder never holds one model's verdict beside another model's images, even when the new run
//!   is killed in turn.
//!
//! On success the call files are removed and the key file stays: it says which model and configuration
//! the folder's outputs come from.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use cxr_core::{Grey8, ScoreError, Scored, Scorer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AuditError, Result};

/// The version of the journal's files; another version is another key.
const JOURNAL_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"CXRJRNL1";

/// What the outputs of a folder come from: `key.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunKey {
    pub version: u32,
    /// `score` or `audit`.
    pub command: String,
    /// The model's name (in the outputs).
    pub model: String,
    /// The model's content hash; `None`: the model cannot be told from another, nothing is resumed.
    pub model_sha256: Option<String>,
    /// The engine that ran it (`Scorer::engine`): tract and onnxruntime agree to ~1e-6, not to the bit, so a
    /// run resumed on the other engine would not give an uninterrupted run's bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// SHA-256 of the configuration (serialised) and of the inputs (manifest bytes and base folder).
    pub config_sha256: String,
    pub inputs_sha256: String,
}

impl RunKey {
    pub fn new(
        command: &str,
        scorer: &dyn Scorer,
        config: &impl Serialize,
        inputs: &[u8],
    ) -> Result<Self> {
        let config = serde_json::to_vec(config)
            .map_err(|e| AuditError::config("resume key", e.to_string()))?;
        Ok(Self {
            version: JOURNAL_VERSION,
            command: command.to_string(),
            model: scorer.name().to_string(),
            model_sha256: scorer.model_sha256().map(str::to_string),
            engine: scorer.engine().map(str::to_string),
            config_sha256: cxr_core::fsutil::sha256_bytes(&config),
            inputs_sha256: cxr_core::fsutil::sha256_bytes(inputs),
        })
    }

    /// What differs from `old`, in words (the log says why a run starts afresh).
    fn differences(&self, old: &RunKey) -> String {
        let mut d = Vec::new();
        if old.command != self.command || old.version != self.version {
            d.push("another command or journal version");
        }
        if old.model != self.model || old.model_sha256 != self.model_sha256 {
            d.push("another model");
        }
        if old.engine != self.engine {
            d.push("another engine");
        }
        if old.config_sha256 != self.config_sha256 {
            d.push("another configuration");
        }
        if old.inputs_sha256 != self.inputs_sha256 {
            d.push("other inputs");
        }
        d.join(", ")
    }
}

/// The journal of one output folder (see the module documentation).
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    /// Whether calls are recorded and replayed: only for a model with a content hash.
    active: bool,
    replayed: AtomicUsize,
}

impl Journal {
    /// Opens (resume) or resets (start afresh) the journal at `dir` for a run with `key`; `owned` are the
    /// outputs the run writes, removed when it starts afresh. An input of the run (`inputs`) inside an owned
    /// path is refused rather than removed.
    pub fn open(dir: &Path, key: &RunKey, owned: &[PathBuf], inputs: &[&Path]) -> Result<Self> {
        let key_path = dir.join("key.json");
        let old: Option<RunKey> = std::fs::read(&key_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let active = key.model_sha256.is_some();
        if !(active && old.as_ref() == Some(key)) {
            let abs = |p: &Path| cxr_core::absolute_path(p);
            for o in owned {
                if let Some(i) = inputs.iter().find(|i| abs(i).starts_with(abs(o))) {
                    return Err(AuditError::input(
                        o,
                        format!(
                            "cannot start afresh here: the input {} lies inside this output; choose another output folder",
                            i.display()
                        ),
                    ));
                }
            }
            let existing: Vec<&PathBuf> = owned
                .iter()
                .filter(|p| std::fs::symlink_metadata(p).is_ok())
                .collect();
            if !existing.is_empty() {
                let why = match &old {
                    Some(old) if old == key => "the model has no content hash".to_string(),
                    Some(old) => key.differences(old),
                    None => "no key file".to_string(),
                };
                tracing::warn!(
                    "{}: starting afresh ({why}): removing the earlier outputs {}",
                    dir.display(),
                    existing
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            for p in owned.iter().chain(std::iter::once(&dir.to_path_buf())) {
                remove_path(p)?;
            }
            let bytes = serde_json::to_vec_pretty(key)
                .map_err(|e| AuditError::input(&key_path, e.to_string()))?;
            cxr_core::fsutil::write_atomic(&key_path, &bytes)?;
        } else {
            tracing::info!(
                "{}: resuming (same model, configuration and inputs)",
                dir.display()
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            active,
            replayed: AtomicUsize::new(0),
        })
    }

    /// `inner`, with every call answered from the journal when it holds the batch, and recorded otherwise.
    pub fn scorer<'a>(&'a self, inner: &'a dyn Scorer) -> Journaled<'a> {
        Journaled {
            journal: self,
            inner,
        }
    }

    /// Scorer calls answered from the journal so far.
    pub fn replayed(&self) -> usize {
        self.replayed.load(Ordering::Relaxed)
    }

    /// The run completed: its call files go, its key file stays.
    pub fn finish(self) -> Result<()> {
        if self.replayed() > 0 {
            tracing::info!(
                "{}: {} batches were taken from the journal of an interrupted run",
                self.dir.display(),
                self.replayed()
            );
        }
        remove_path(&self.dir.join("calls"))
    }

    /// The file of one call, named by what was asked (`kind`: [`CallKind`]) and the batch's content.
    fn call_path(&self, images: &[Grey8], kind: CallKind) -> PathBuf {
        let mut h = Sha256::new();
        h.update([kind as u8]);
        h.update((images.len() as u64).to_le_bytes());
        for g in images {
            h.update(g.width.to_le_bytes());
            h.update(g.height.to_le_bytes());
            h.update(&g.data);
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join("calls").join(format!("{hex}.bin"))
    }
}

/// Removes a file or a folder; one that is not there is fine.
fn remove_path(p: &Path) -> Result<()> {
    let r = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(_) => return Ok(()),
    };
    r.map_err(AuditError::io(p))
}

/// What a journaled call asked for: scores, scores with features, or the raw logits of
/// [`Scorer::logits`] (kept as scores).
#[derive(Clone, Copy)]
enum CallKind {
    Scores = 0,
    ScoresAndFeatures = 1,
    Logits = 2,
}

/// A scorer behind a [`Journal`].
pub struct Journaled<'a> {
    journal: &'a Journal,
    inner: &'a dyn Scorer,
}

impl Scorer for Journaled<'_> {
    crate::load::delegate_scorer!();
    fn score(&self, images: &[Grey8], features: bool) -> std::result::Result<Scored, ScoreError> {
        let kind = if features {
            CallKind::ScoresAndFeatures
        } else {
            CallKind::Scores
        };
        self.journaled(images, kind, || self.inner.score(images, features))
    }
    fn logits(&self, images: &[Grey8]) -> std::result::Result<Vec<f64>, ScoreError> {
        let s = self.journaled(images, CallKind::Logits, || {
            Ok(Scored {
                scores: self.inner.logits(images)?,
                features: None,
            })
        })?;
        Ok(s.scores)
    }
}

impl Journaled<'_> {
    /// The journal's answer to this call when it holds one; else `call`'s, recorded.
    fn journaled(
        &self,
        images: &[Grey8],
        kind: CallKind,
        call: impl FnOnce() -> std::result::Result<Scored, ScoreError>,
    ) -> std::result::Result<Scored, ScoreError> {
        if !self.journal.active {
            return call();
        }
        let path = self.journal.call_path(images, kind);
        if let Some(s) = std::fs::read(&path)
            .ok()
            .and_then(|b| decode(&b, images.len()))
        {
            self.journal.replayed.fetch_add(1, Ordering::Relaxed);
            return Ok(s);
        }
        let s = call()?;
        // A short answer is the caller's error to report; it is not kept.
        if s.scores.len() == images.len() {
            cxr_core::fsutil::write_replace(&path, &encode(&s))
                .map_err(|e| ScoreError::new(self.name(), format!("journal: {e}")))?;
        }
        Ok(s)
    }
}

/// A call's answer as bytes: the scores' and features' bits, exactly (a text form could round).
fn encode(s: &Scored) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    b.extend_from_slice(&(s.scores.len() as u64).to_le_bytes());
    for v in &s.scores {
        b.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    match &s.features {
        None => b.push(0),
        Some(f) => {
            b.push(1);
            b.extend_from_slice(&(f.len() as u64).to_le_bytes());
            for row in f {
                b.extend_from_slice(&(row.len() as u64).to_le_bytes());
                for v in row {
                    b.extend_from_slice(&v.to_bits().to_le_bytes());
                }
            }
        }
    }
    b
}

/// [`encode`]'s bytes back, when they are whole and answer a batch of `n`.
fn decode(b: &[u8], n: usize) -> Option<Scored> {
    let mut r = Cursor(b.strip_prefix(MAGIC.as_slice())?);
    if r.len()? != n {
        return None;
    }
    let mut scores = Vec::with_capacity(n);
    for _ in 0..n {
        scores.push(f64::from_bits(u64::from_le_bytes(r.take()?)));
    }
    let features = match r.take::<1>()? {
        [0] => None,
        [1] => {
            let rows = r.len()?;
            if rows > n {
                return None;
            }
            let mut f = Vec::with_capacity(rows);
            for _ in 0..rows {
                let len = r.len()?;
                let bytes = r.slice(len.checked_mul(4)?)?;
                f.push(
                    bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_bits(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                        .collect(),
                );
            }
            Some(f)
        }
        _ => return None,
    };
    r.0.is_empty().then_some(Scored { scores, features })
}

/// Reads [`encode`]'s bytes front to back; `None` when they end too early.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn slice(&mut self, k: usize) -> Option<&'a [u8]> {
        let (h, t) = self.0.split_at_checked(k)?;
        self.0 = t;
        Some(h)
    }
    fn take<const K: usize>(&mut self) -> Option<[u8; K]> {
        self.slice(K)?.try_into().ok()
    }
    fn len(&mut self) -> Option<usize> {
        usize::try_from(u64::from_le_bytes(self.take()?)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use crate::config::AuditConfig;
    use crate::run::run_audit;
    use crate::score::{ScoreConfig, journal_dir, score_manifest};
    use crate::test_support::{Counted, tiny_manifest};

    /// The same ONNX model on tract and on onnxruntime: two keys, so a run is never resumed on the other
    /// engine (their scores agree to ~1e-6, not to the bit).
    #[test]
    fn the_engine_is_part_of_the_key() {
        use cxr_onnx::{Engine, LoadOptions, ModelSpec, OnnxScorer};
        if let Err(e) = cxr_onnx::engine::onnxruntime() {
            println!("skipped: onnxruntime not found ({e})");
            return;
        }
        let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../onnx/tests/fixtures/cue_outside.toml");
        let key = |engine| {
            let scorer = OnnxScorer::load(
                ModelSpec::load(&spec).unwrap(),
                &LoadOptions::engine(engine),
            )
            .unwrap();
            RunKey::new("score", &scorer, &1u32, b"manifest").unwrap()
        };
        let (tract, ort) = (key(Engine::Tract), key(Engine::Onnxruntime));
        assert_eq!(tract.model_sha256, ort.model_sha256);
        assert_ne!(tract, ort);
        assert_eq!(ort.differences(&tract), "another engine");
        assert_eq!(tract, key(Engine::Tract));
    }

    const SCORE_FILES: [&str; 3] = [
        "predictions.csv",
        "predictions.rejects.csv",
        "predictions.model.json",
    ];

    /// A folder with the tiny manifest, and the manifest.
    fn fixture() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let m = tiny_manifest(dir.path());
        (dir, m)
    }

    fn score_cfg(dir: &Path, name: &str) -> ScoreConfig {
        ScoreConfig {
            out: dir.join(name).join("predictions.csv"),
            batch_size: 3,
            ..Default::default()
        }
    }

    /// A score interrupted after k batches, rerun: the bytes of an uninterrupted run, k batches fewer scored;
    /// then another model in the same folder, interrupted: nothing of the first model's is left beside it.
    #[test]
    fn an_interrupted_score_resumes_and_another_model_starts_afresh() {
        let (dir, m) = fixture();
        let d = dir.path();
        let whole = Counted::new("aa", usize::MAX, false);
        score_manifest(&whole, &m, &score_cfg(d, "whole"), &|_| {}).unwrap();
        let total = whole.calls();
        assert_eq!(total, 6, "16 rows in batches of 3");
        for k in [0, 2, 5] {
            let name = format!("resumed-{k}");
            let cfg = score_cfg(d, &name);
            let killed = Counted::new("aa", k, false);
            assert!(score_manifest(&killed, &m, &cfg, &|_| {}).is_err());
            assert!(!cfg.out.exists());
            let again = Counted::new("aa", usize::MAX, false);
            score_manifest(&again, &m, &cfg, &|_| {}).unwrap();
            assert_eq!(again.calls(), total - k, "k = {k}");
            for f in SCORE_FILES {
                assert_eq!(
                    std::fs::read(d.join("whole").join(f)).unwrap(),
                    std::fs::read(d.join(&name).join(f)).unwrap(),
                    "{f} after an interruption at batch {k}"
                );
            }
            let journal = journal_dir(&cfg.out);
            assert!(journal.join("key.json").is_file() && !journal.join("calls").exists());
        }
        // A completed run rerun: nothing to resume, the same bytes.
        let cfg = score_cfg(d, "resumed-2");
        let again = Counted::new("aa", usize::MAX, false);
        score_manifest(&again, &m, &cfg, &|_| {}).unwrap();
        assert_eq!(again.calls(), total);

        // Another model into the first one's folder, interrupted after one batch: the first model's
        // predictions and model file are gone, not left beside the second model's journal.
        let other = Counted::new("bb", 1, true);
        assert!(score_manifest(&other, &m, &cfg, &|_| {}).is_err());
        for f in SCORE_FILES {
            assert!(!d.join("resumed-2").join(f).exists(), "{f} left behind");
        }
        let other = Counted::new("bb", usize::MAX, true);
        score_manifest(&other, &m, &cfg, &|_| {}).unwrap();
        assert_eq!(other.calls(), total - 1);
        let meta = std::fs::read_to_string(d.join("resumed-2/predictions.model.json")).unwrap();
        assert!(meta.contains("\"bb\""), "{meta}");
        // The first model's journal is not the second's: its batches are never replayed for it.
        assert_ne!(
            std::fs::read(d.join("whole/predictions.csv")).unwrap(),
            std::fs::read(d.join("resumed-2/predictions.csv")).unwrap()
        );
    }

    /// Every file under `root` (the journal aside), relative, with its bytes; timings blanked in the reports.
    fn outputs(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(root).unwrap().to_path_buf();
                if rel.starts_with(".resume") || rel.starts_with(".predictions.csv.resume") {
                    continue;
                }
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let mut bytes = std::fs::read(&p).unwrap();
                if rel == Path::new("audit.json") {
                    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    v["evidence"][0]["saliency"]["seconds_per_map"] = 0.into();
                    bytes = serde_json::to_vec(&v).unwrap();
                } else if rel == Path::new("report.html") {
                    bytes = blank_timing(&String::from_utf8(bytes).unwrap()).into_bytes();
                }
                out.insert(rel, bytes);
            }
        }
        out
    }

    fn differing(a: &BTreeMap<PathBuf, Vec<u8>>, b: &BTreeMap<PathBuf, Vec<u8>>) -> Vec<PathBuf> {
        a.keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .cloned()
            .collect()
    }

    /// `... forward passes and 0.3 s per map` → `... forward passes and _ s per map`.
    fn blank_timing(html: &str) -> String {
        let (head, tail) = html.split_once("forward passes and ").unwrap();
        let (_, rest) = tail.split_once(" s per map").unwrap();
        format!("{head}forward passes and _ s per map{rest}")
    }

    fn audit_cfg(out: &Path) -> AuditConfig {
        AuditConfig {
            saliency_images: 4,
            saliency_grid: 4,
            batch_size: 4,
            out: Some(out.to_path_buf()),
            ..Default::default()
        }
    }

    /// An audit interrupted at several points, rerun: the same files, byte for byte (timings aside), and only
    /// the missing scorer calls made; a second model's interrupted audit leaves no verdict of the first.
    #[test]
    fn an_interrupted_audit_resumes_and_another_model_starts_afresh() {
        let (dir, m) = fixture();
        let d = dir.path();
        let whole = Counted::new("aa", usize::MAX, false);
        run_audit(&whole, &m, &audit_cfg(&d.join("whole"))).unwrap();
        let total = whole.calls();
        let expected = outputs(&d.join("whole"));
        assert!(expected.keys().any(|p| p.starts_with("occlusion")));
        assert!(expected.keys().any(|p| p.starts_with("saliency")));
        for k in [1, total / 2, total - 1] {
            let out = d.join(format!("resumed-{k}"));
            let killed = Counted::new("aa", k, false);
            assert!(run_audit(&killed, &m, &audit_cfg(&out)).is_err());
            assert!(!out.join("audit.json").exists());
            let again = Counted::new("aa", usize::MAX, false);
            run_audit(&again, &m, &audit_cfg(&out)).unwrap();
            assert_eq!(again.calls(), total - k, "k = {k} of {total}");
            let got = outputs(&out);
            assert!(
                got == expected,
                "call {k}: {:?} differ",
                differing(&got, &expected)
            );
        }
        // A second model in the first one's folder, interrupted: the first model's verdict is gone at once.
        let out = d.join(format!("resumed-{}", total - 1));
        let other = Counted::new("bb", 2, true);
        assert!(run_audit(&other, &m, &audit_cfg(&out)).is_err());
        for f in ["audit.json", "report.html", "saliency"] {
            assert!(!out.join(f).exists(), "{f} of the first model left behind");
        }
        let other = Counted::new("bb", usize::MAX, true);
        let done = run_audit(&other, &m, &audit_cfg(&out)).unwrap();
        assert_eq!(other.calls(), total - 2);
        let alone = Counted::new("bb", usize::MAX, true);
        run_audit(&alone, &m, &audit_cfg(&d.join("other-alone"))).unwrap();
        let (a, b) = (outputs(&out), outputs(&d.join("other-alone")));
        assert!(a == b, "{:?} differ", differing(&a, &b));
        assert_eq!(done.report.evidence[0].model_sha256.as_deref(), Some("bb"));
    }

    const CHILD_ENV: &str = "CXR_RESUME_KILL_CHILD";

    /// After `k` answered calls, says so in `marker` and waits to be killed (in the middle of call k + 1).
    struct WaitsAfter {
        inner: Counted,
        k: usize,
        marker: PathBuf,
    }

    impl Scorer for WaitsAfter {
        crate::load::delegate_scorer!();
        fn score(&self, images: &[Grey8], f: bool) -> std::result::Result<Scored, ScoreError> {
            if self.inner.calls() == self.k {
                std::fs::write(&self.marker, b"waiting").unwrap();
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
            self.inner.score(images, f)
        }
    }

    /// What the child process runs: `score` or `audit` of the tiny manifest in `dir` into `dir/<out>`.
    fn run_child(what: &str, dir: &Path, out: &str, scorer: &dyn Scorer) {
        let m = dir.join("manifest.csv");
        if what == "score" {
            score_manifest(scorer, &m, &score_cfg(dir, out), &|_| {}).unwrap();
        } else {
            run_audit(scorer, &m, &audit_cfg(&dir.join(out))).unwrap();
        }
    }

    /// A real process (this test binary again) SIGKILLed in the middle of its (k+1)-th scorer call, the run
    /// resumed in this process: the outputs of an uninterrupted run and only the k calls it had not made.
    #[test]
    fn a_killed_process_resumes() {
        if let Some(v) = std::env::var_os(CHILD_ENV) {
            let v = v.to_string_lossy().into_owned();
            let mut it = v.splitn(3, '|');
            let (what, k, dir) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
            let dir = Path::new(dir);
            let scorer = WaitsAfter {
                inner: Counted::new("aa", usize::MAX, false),
                k: k.parse().unwrap(),
                marker: dir.join(format!("{what}.waiting")),
            };
            run_child(what, dir, what, &scorer);
            return;
        }
        let (dir, _) = fixture();
        let d = dir.path();
        for (what, k) in [("score", 3), ("audit", 7)] {
            let whole = Counted::new("aa", usize::MAX, false);
            let whole_out = format!("{what}-whole");
            run_child(what, d, &whole_out, &whole);
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "resume::tests::a_killed_process_resumes"])
                .env(CHILD_ENV, format!("{what}|{k}|{}", d.display()))
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let marker = d.join(format!("{what}.waiting"));
            // Not a timing: the child signals that it is inside call k + 1; the bound only stops a hang.
            for _ in 0..60_000 {
                if marker.exists() {
                    break;
                }
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("the {what} child ended ({status}) before call {k}");
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert!(marker.exists(), "the {what} child never reached call {k}");
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            let again = Counted::new("aa", usize::MAX, false);
            run_child(what, d, what, &again);
            assert_eq!(again.calls(), whole.calls() - k, "{what}");
            let (a, b) = (outputs(&d.join(whole_out)), outputs(&d.join(what)));
            assert!(!a.is_empty());
            assert!(
                a == b,
                "{what} after a SIGKILL at call {k}: {:?} differ",
                differing(&a, &b)
            );
        }
    }

    #[test]
    fn answers_round_trip_bit_for_bit_and_cut_files_are_not_answers() {
        let s = Scored {
            scores: vec![0.1, 1.0 / 3.0, f64::MIN_POSITIVE],
            features: Some(vec![vec![1.5e-38, -0.0, 7.1], vec![], vec![f32::MAX]]),
        };
        let b = encode(&s);
        assert_eq!(decode(&b, 3), Some(s.clone()));
        assert_eq!(decode(&b, 2), None);
        for cut in 0..b.len() {
            assert_eq!(decode(&b[..cut], 3), None, "cut at {cut}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(decode(&longer, 3), None);
    }
}
