//! Sharding of per-image stages over cluster job arrays (Slurm arrays, Kubernetes Indexed Jobs).
//!
//! **Assignment rule.** A row belongs to shard `u64::from_be_bytes(sha256(key)[..8]) mod N`, where `key` is
//! the row's `aug_of` column when it is set (an augmented row `<id>.aug<k>` goes with its original) and its
//! `id` otherwise. SHA-256 (not Rust's `DefaultHasher`, whose output may change between releases and is
//! seeded per process) keeps the assignment identical on every machine, build and run.
//!
//! **Where the shard comes from** ([`resolve`]): the `--shard K/N` flag; else a Slurm array
//! (`SLURM_ARRAY_TASK_ID` with `SLURM_ARRAY_TASK_MIN`/`MAX`/`STEP`, or with `SLURM_ARRAY_TASK_COUNT` for an
//! array that starts at 0); else a Kubernetes Indexed Job (`JOB_COMPLETION_INDEX` with the count from
//! `CXR_SHARD_COUNT`, as Kubernetes does not export it). A half-set environment (an index without a count, or
//! a count without an index) is an error, never a silent whole run.
//!
//! **Parts.** A shard writes `<stem>.part-K-of-N.csv` instead of `<stem>.csv`, plus a sidecar
//! `<stem>.part-K-of-N.json` ([`PartMeta`]: N, the input manifest and its SHA-256, the stage's config hash,
//! the row count). [`merge_dir`] streams the parts back into `<stem>.csv`, in the input manifest's row order,
//! byte for byte what an unsharded run writes (see there).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::REQUIRED_COLUMNS;
use crate::{CoreError, Manifest, ManifestRecord, fsutil};

/// The most shards a run may be split into (a guard against a typo such as `--shard 0/10000000`).
pub const MAX_SHARDS: u32 = 1 << 20;

/// Environment variable holding the shard count of a Kubernetes Indexed Job (set it to `.spec.completions`).
pub const K8S_COUNT_ENV: &str = "CXR_SHARD_COUNT";

/// Shard `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

fn shard_err(message: impl Into<String>) -> CoreError {
    CoreError::Shard(message.into())
}

impl Shard {
    pub fn new(index: u32, count: u32) -> Result<Self, CoreError> {
        if count == 0 || count > MAX_SHARDS {
            return Err(shard_err(format!(
                "shard count {count} is out of range 1..={MAX_SHARDS}"
            )));
        }
        if index >= count {
            return Err(shard_err(format!(
                "shard index {index} is not below the count {count} (indices are 0-based)"
            )));
        }
        Ok(Self { index, count })
    }

    /// The shard (0-based, of `count`) a key belongs to: first 8 bytes of SHA-256 of the key, big-endian, mod N.
    pub fn assign(key: &str, count: u32) -> u32 {
        let d = Sha256::digest(key.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        (u64::from_be_bytes(b) % u64::from(count.max(1))) as u32
    }

    /// Whether this shard owns a row with this key.
    pub fn owns(&self, key: &str) -> bool {
        Self::assign(key, self.count) == self.index
    }

    /// Whether this shard owns a manifest row (by [`row_key`]).
    pub fn owns_record(&self, r: &ManifestRecord) -> bool {
        self.owns(&row_key(r))
    }

    /// The rows of `m` this shard owns, in their order (columns and base folder kept).
    pub fn filter(&self, m: &Manifest) -> Manifest {
        Manifest {
            records: m
                .records
                .iter()
                .filter(|r| self.owns_record(r))
                .cloned()
                .collect(),
            extra_columns: m.extra_columns.clone(),
            base_dir: m.base_dir.clone(),
            absent: m.absent.clone(),
        }
    }

    /// `dir/stem.ext` → `dir/stem.part-K-of-N.ext` (e.g. `manifest.csv` → `manifest.part-0-of-3.csv`).
    pub fn part_path(&self, path: &Path) -> PathBuf {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = match path.extension() {
            Some(e) => format!(
                "{stem}.part-{}-of-{}.{}",
                self.index,
                self.count,
                e.to_string_lossy()
            ),
            None => format!("{stem}.part-{}-of-{}", self.index, self.count),
        };
        path.with_file_name(name)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        let bad = || shard_err(format!("--shard {s:?}: expected K/N, e.g. 0/3"));
        let (k, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let k: u32 = k.trim().parse().map_err(|_| bad())?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        Self::new(k, n)
    }
}

/// The key a row is assigned by: `aug_of` when set, else `id`.
pub fn row_key(r: &ManifestRecord) -> String {
    match r.extra.get("aug_of") {
        Some(a) if !a.is_empty() => a.clone(),
        _ => r.id.clone(),
    }
}

/// Where a shard came from (the log says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardSource {
    Flag,
    Slurm,
    Kubernetes,
}

impl fmt::Display for ShardSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flag => "the --shard flag",
            Self::Slurm => "the Slurm array (SLURM_ARRAY_TASK_*)",
            Self::Kubernetes => {
                "the Kubernetes Indexed Job (JOB_COMPLETION_INDEX, CXR_SHARD_COUNT)"
            }
        })
    }
}

/// The shard of this run: the flag wins, then Slurm, then Kubernetes; `None` for a whole run. `env` looks a
/// variable up (the process environment in production, a map in tests); empty values count as unset.
pub fn resolve(
    flag: Option<Shard>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<(Shard, ShardSource)>, CoreError> {
    if let Some(s) = flag {
        return Ok(Some((s, ShardSource::Flag)));
    }
    let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let num = |k: &str| -> Result<Option<i64>, CoreError> {
        match get(k) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| shard_err(format!("{k}={v:?} is not an integer"))),
        }
    };
    let (id, min, max, step, count) = (
        num("SLURM_ARRAY_TASK_ID")?,
        num("SLURM_ARRAY_TASK_MIN")?,
        num("SLURM_ARRAY_TASK_MAX")?,
        num("SLURM_ARRAY_TASK_STEP")?,
        num("SLURM_ARRAY_TASK_COUNT")?,
    );
    if id.is_some() || min.is_some() || max.is_some() || count.is_some() {
        let id = id.ok_or_else(|| {
            shard_err("half-set Slurm environment: SLURM_ARRAY_TASK_MIN/MAX/COUNT without SLURM_ARRAY_TASK_ID")
        })?;
        let shard = match (min, max) {
            (Some(min), Some(max)) => {
                let step = step.unwrap_or(1);
                if step < 1 || max < min {
                    return Err(shard_err(format!(
                        "Slurm array {min}-{max}:{step} is not a range"
                    )));
                }
                let n = (max - min) / step + 1;
                if let Some(c) = count
                    && c != n
                {
                    return Err(shard_err(format!(
                        "Slurm array {min}-{max}:{step} has {n} steps but SLURM_ARRAY_TASK_COUNT={c}: \
                             a list or a range with holes cannot be mapped to shards; submit a range \
                             (--array=0-{}) or pass --shard",
                        c - 1
                    )));
                }
                if id < min || id > max || (id - min) % step != 0 {
                    return Err(shard_err(format!(
                        "SLURM_ARRAY_TASK_ID={id} is not in the array {min}-{max}:{step}"
                    )));
                }
                shard_from(
                    (id - min) / step,
                    n,
                    "SLURM_ARRAY_TASK_ID (relative to MIN/STEP)",
                )?
            }
            (None, None) => {
                let c = count.ok_or_else(|| {
                    shard_err(
                        "half-set Slurm environment: SLURM_ARRAY_TASK_ID without SLURM_ARRAY_TASK_COUNT \
                         or SLURM_ARRAY_TASK_MIN/MAX",
                    )
                })?;
                shard_from(id, c, "SLURM_ARRAY_TASK_ID")?
            }
            _ => {
                return Err(shard_err(
                    "half-set Slurm environment: only one of SLURM_ARRAY_TASK_MIN / SLURM_ARRAY_TASK_MAX",
                ));
            }
        };
        return Ok(Some((shard, ShardSource::Slurm)));
    }
    match (num("JOB_COMPLETION_INDEX")?, num(K8S_COUNT_ENV)?) {
        (None, None) => Ok(None),
        (Some(i), Some(n)) => Ok(Some((
            shard_from(i, n, "JOB_COMPLETION_INDEX")?,
            ShardSource::Kubernetes,
        ))),
        (Some(_), None) => Err(shard_err(format!(
            "half-set Kubernetes environment: JOB_COMPLETION_INDEX without {K8S_COUNT_ENV} \
             (set it to the Job's .spec.completions)"
        ))),
        (None, Some(_)) => Err(shard_err(format!(
            "half-set Kubernetes environment: {K8S_COUNT_ENV} without JOB_COMPLETION_INDEX \
             (an Indexed Job sets it; use completionMode: Indexed)"
        ))),
    }
}

fn shard_from(index: i64, count: i64, what: &str) -> Result<Shard, CoreError> {
    let idx = u32::try_from(index)
        .map_err(|_| shard_err(format!("{what}: index {index} is negative or too large")))?;
    let n = u32::try_from(count)
        .map_err(|_| shard_err(format!("{what}: count {count} is negative or too large")))?;
    Shard::new(idx, n).map_err(|e| shard_err(format!("{what}: {e}")))
}

/// The sidecar of one part (`<stem>.part-K-of-N.json`): what [`merge_dir`] checks before joining parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartMeta {
    /// The stage that wrote it (`preprocess`, `segment`, `embed`, ...).
    pub stage: String,
    pub shard: u32,
    pub count: u32,
    /// The input manifest, absolute or relative to the part's folder.
    pub input_manifest: PathBuf,
    /// SHA-256 of the input manifest's bytes.
    pub input_sha256: String,
    /// Hash of everything else that decides the output (config, weights, options).
    pub config_hash: String,
    /// Data rows in the part.
    pub rows: u64,
    /// SHA-256 of the part's bytes as written ([`write_part_meta`] computes it): a part cut inside a field or
    /// edited afterwards (a flipped label) is refused by [`merge_dir`]. Empty in sidecars of older versions,
    /// which merge refuses.
    #[serde(default)]
    pub part_sha256: String,
    /// SHA-256 of every other input file that shaped the part, by role (`model`: the model file's content,
    /// `weights`, `model_spec`); all parts must agree.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
}

/// Writes the sidecar beside `part` (same name, `.json`), atomically, with the part's content hash
/// (`meta.part_sha256` is replaced by the hash of the part's bytes now).
pub fn write_part_meta(part: &Path, meta: &PartMeta) -> Result<PathBuf, CoreError> {
    let path = part.with_extension("json");
    let meta = PartMeta {
        part_sha256: fsutil::sha256_file(part)?,
        ..meta.clone()
    };
    let bytes = serde_json::to_vec_pretty(&meta).map_err(|e| CoreError::Json {
        path: path.clone(),
        message: e.to_string(),
    })?;
    fsutil::write_atomic(&path, &bytes)?;
    Ok(path)
}

/// Data rows of a CSV file (streamed).
pub fn count_csv_rows(path: &Path) -> Result<u64, CoreError> {
    let file = std::fs::File::open(path).map_err(|e| CoreError::io(path, e))?;
    let mut rdr = csv::Reader::from_reader(std::io::BufReader::new(file));
    let mut rec = csv::ByteRecord::new();
    let mut n = 0;
    while rdr.read_byte_record(&mut rec).map_err(|e| CoreError::Csv {
        path: path.to_path_buf(),
        line: n + 2,
        message: e.to_string(),
    })? {
        n += 1;
    }
    Ok(n)
}

/// Parses `stem.part-K-of-N.csv` into (stem, K, N).
pub fn parse_part_name(name: &str) -> Option<(String, u32, u32)> {
    let base = name.strip_suffix(".csv")?;
    let (stem, rest) = base.rsplit_once(".part-")?;
    let (k, n) = rest.split_once("-of-")?;
    if stem.is_empty() || k.is_empty() || n.is_empty() {
        return None;
    }
    let k = k.parse().ok()?;
    let n = n.parse().ok()?;
    Some((stem.to_string(), k, n))
}

/// What [`merge_dir`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedFile {
    pub path: PathBuf,
    pub parts: u32,
    pub rows: u64,
}

/// Joins every group of parts in `dir` (`<stem>.part-K-of-N.csv` for K = 0..N) into `<stem>.csv`.
///
/// Order: the input manifest's (named in the sidecars, or `input` when given) row order. Each part holds its
/// shard's rows in input order, so merge walks the input manifest once, computes each row's shard with the
/// assignment rule, and takes from that shard's part the rows that came from it (`id` equal to the input row's
/// `id`, or `aug_of` equal to it: the ten augmented rows of an image). Everything is streamed: memory is one
/// row per part, whatever the row count.
///
/// Header: identical parts' header as is. Manifests (whose columns an unsharded run orders as the required
/// columns, `split` when any row has one, the input's extra columns, then new columns sorted) get the same
/// rule over the union of the parts' columns, and each row is re-serialised by the same CSV writer, so the
/// output is byte for byte the unsharded file.
///
/// Refuses (one line naming the files): a missing or duplicated part, parts of different N, a missing
/// sidecar, sidecars disagreeing on the stage, input manifest hash or config hash, an input manifest whose
/// bytes changed since, a part whose row count differs from its sidecar, and part rows that do not follow the
/// input manifest.
pub fn merge_dir(dir: &Path, input: Option<&Path>) -> Result<Vec<MergedFile>, CoreError> {
    let mut groups: BTreeMap<String, Vec<(u32, u32, PathBuf)>> = BTreeMap::new();
    for e in std::fs::read_dir(dir).map_err(|e| CoreError::io(dir, e))? {
        let e = e.map_err(|e| CoreError::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((stem, k, n)) = parse_part_name(&name) {
            groups.entry(stem).or_default().push((k, n, e.path()));
        }
    }
    if groups.is_empty() {
        return Err(shard_err(format!(
            "{}: no parts (`<name>.part-K-of-N.csv`) to merge",
            dir.display()
        )));
    }
    // All or nothing: every group is merged into a hidden staging file first, and only when all succeeded are
    // they renamed onto their names, so a failing group (a missing rejects part) leaves no new `manifest.csv`.
    let mut out: Vec<MergedFile> = Vec::new();
    for (stem, mut parts) in groups {
        parts.sort();
        match merge_group(dir, &stem, &parts, input) {
            Ok(m) => out.push(m),
            Err(e) => {
                for m in &out {
                    let _ = std::fs::remove_file(staging_path(&m.path));
                }
                return Err(e);
            }
        }
    }
    for m in &out {
        let staged = staging_path(&m.path);
        std::fs::rename(&staged, &m.path).map_err(|e| CoreError::io(&m.path, e))?;
    }
    Ok(out)
}

/// Where [`merge_group`] writes `target` before [`merge_dir`] commits every group at once.
fn staging_path(target: &Path) -> PathBuf {
    target.with_file_name(format!(".{}.merging", file_name(target)))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn merge_group(
    dir: &Path,
    stem: &str,
    parts: &[(u32, u32, PathBuf)],
    input_override: Option<&Path>,
) -> Result<MergedFile, CoreError> {
    // Same N everywhere, every K once.
    let n = parts[0].1;
    if let Some((_, other, p)) = parts.iter().find(|(_, c, _)| *c != n) {
        return Err(shard_err(format!(
            "mismatched parts: {} is one of {other}, {} one of {n}",
            file_name(p),
            file_name(&parts[0].2)
        )));
    }
    let mut seen: BTreeMap<u32, &PathBuf> = BTreeMap::new();
    for (k, _, p) in parts {
        if let Some(first) = seen.insert(*k, p) {
            return Err(shard_err(format!(
                "duplicated part {k} of {n}: {} and {}",
                file_name(first),
                file_name(p)
            )));
        }
    }
    let missing: Vec<String> = (0..n)
        .filter(|k| !seen.contains_key(k))
        .map(|k| format!("{stem}.part-{k}-of-{n}.csv"))
        .collect();
    if !missing.is_empty() {
        return Err(shard_err(format!(
            "{}: missing part(s) {}",
            dir.display(),
            missing.join(", ")
        )));
    }
    let parts: Vec<&PathBuf> = (0..n).filter_map(|k| seen.get(&k).copied()).collect();

    // Sidecars agree, and the input manifest is the one the shards read.
    let metas: Vec<PartMeta> = parts
        .iter()
        .map(|p| {
            let side = p.with_extension("json");
            let bytes = std::fs::read(&side).map_err(|e| {
                shard_err(format!(
                    "{}: missing sidecar {} ({e})",
                    file_name(p),
                    file_name(&side)
                ))
            })?;
            serde_json::from_slice::<PartMeta>(&bytes).map_err(|e| CoreError::Json {
                path: side.clone(),
                message: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    let m0 = &metas[0];
    for (k, (meta, p)) in metas.iter().zip(&parts).enumerate() {
        let name = file_name(p);
        let first = file_name(parts[0]);
        if meta.count != n || meta.shard as usize != k {
            return Err(shard_err(format!(
                "mismatched part: {name}'s sidecar says shard {} of {}",
                meta.shard, meta.count
            )));
        }
        if meta.stage != m0.stage {
            return Err(shard_err(format!(
                "mismatched parts: {name} is from stage `{}`, {first} from `{}`",
                meta.stage, m0.stage
            )));
        }
        if meta.input_sha256 != m0.input_sha256 {
            return Err(shard_err(format!(
                "mismatched parts: {name} was made from another input manifest than {first} \
                 (sha256 {} vs {})",
                short(&meta.input_sha256),
                short(&m0.input_sha256)
            )));
        }
        if meta.config_hash != m0.config_hash {
            return Err(shard_err(format!(
                "mismatched parts: {name} was made with another config than {first} ({} vs {})",
                short(&meta.config_hash),
                short(&m0.config_hash)
            )));
        }
        if let Some((role, sha)) = meta
            .inputs
            .iter()
            .chain(&m0.inputs)
            .find(|(r, _)| meta.inputs.get(*r) != m0.inputs.get(*r))
        {
            return Err(shard_err(format!(
                "mismatched parts: {name} was made from another {role} than {first} (sha256 {} vs {})",
                short(meta.inputs.get(role).unwrap_or(sha)),
                m0.inputs.get(role).map_or("none", |h| short(h))
            )));
        }
    }
    let input = match input_override {
        Some(p) => p.to_path_buf(),
        None if m0.input_manifest.is_absolute() => m0.input_manifest.clone(),
        None => dir.join(&m0.input_manifest),
    };
    let input_sha = fsutil::sha256_file(&input)?;
    if input_sha != m0.input_sha256 {
        return Err(shard_err(format!(
            "{}: the input manifest {} changed since the parts were made (sha256 {} vs {})",
            file_name(parts[0]),
            input.display(),
            short(&input_sha),
            short(&m0.input_sha256)
        )));
    }
    // Each part is the bytes its shard wrote: a cut inside a field or an edited cell keeps the row count.
    for (meta, p) in metas.iter().zip(&parts) {
        let name = file_name(p);
        if meta.part_sha256.is_empty() {
            return Err(shard_err(format!(
                "{name}: its sidecar holds no content hash (written by an older version): rerun that shard"
            )));
        }
        let sha = fsutil::sha256_file(p)?;
        if sha != meta.part_sha256 {
            return Err(shard_err(format!(
                "{name}: its bytes differ from the sha256 its sidecar recorded ({} vs {}): the part was cut \
                     or edited after it was written; rerun that shard",
                short(&sha),
                short(&meta.part_sha256)
            )));
        }
    }

    // Readers, headers and the merged header.
    let open = |p: &Path| -> Result<csv::Reader<std::io::BufReader<std::fs::File>>, CoreError> {
        let f = std::fs::File::open(p).map_err(|e| CoreError::io(p, e))?;
        Ok(csv::Reader::from_reader(std::io::BufReader::new(f)))
    };
    let csv_err = |p: &Path, line: u64, e: &dyn fmt::Display| CoreError::Csv {
        path: p.to_path_buf(),
        line,
        message: e.to_string(),
    };
    let mut readers = Vec::new();
    let mut headers: Vec<Vec<String>> = Vec::new();
    for p in &parts {
        let mut r = open(p)?;
        let h = r.headers().map_err(|e| csv_err(p, 1, &e))?;
        headers.push(h.iter().map(str::to_string).collect());
        readers.push(r);
    }
    let merged =
        merged_header(&headers).map_err(|m| shard_err(format!("{}: {m}", dir.display())))?;
    let maps: Vec<Vec<Option<usize>>> = headers
        .iter()
        .map(|h| {
            merged
                .iter()
                .map(|c| h.iter().position(|x| x == c))
                .collect()
        })
        .collect();
    let id_col: Vec<usize> = headers
        .iter()
        .zip(&parts)
        .map(|(h, p)| {
            h.iter()
                .position(|c| c == "id")
                .ok_or_else(|| shard_err(format!("{}: no `id` column", file_name(p))))
        })
        .collect::<Result<_, _>>()?;
    let aug_col: Vec<Option<usize>> = headers
        .iter()
        .map(|h| h.iter().position(|c| c == "aug_of"))
        .collect();

    // The input manifest: only `id` and `aug_of` are needed, streamed.
    let mut inp = open(&input)?;
    let ih = inp.headers().map_err(|e| csv_err(&input, 1, &e))?.clone();
    let in_id =
        ih.iter()
            .position(|c| c.trim() == "id")
            .ok_or_else(|| CoreError::MissingColumn {
                path: input.clone(),
                column: "id".into(),
            })?;
    let in_aug = ih.iter().position(|c| c.trim() == "aug_of");

    let target = dir.join(format!("{stem}.csv"));
    let staged = staging_path(&target);
    let mut pending: Vec<Option<csv::StringRecord>> = vec![None; parts.len()];
    let mut line = vec![1u64; parts.len()];
    let mut taken = vec![0u64; parts.len()];
    let mut total = 0u64;
    // Errors inside the streaming closure travel as io::Error; the message already names the file.
    fsutil::write_atomic_with(&staged, |w| {
        let io = |e: CoreError| std::io::Error::other(e.to_string());
        let mut wtr = csv::Writer::from_writer(w);
        wtr.write_record(&merged)?;
        let mut irec = csv::StringRecord::new();
        let mut iline = 1u64;
        while inp
            .read_record(&mut irec)
            .map_err(|e| io(csv_err(&input, iline + 1, &e)))?
        {
            iline += 1;
            let id = irec.get(in_id).unwrap_or("");
            let key = match in_aug.and_then(|c| irec.get(c)) {
                Some(a) if !a.is_empty() => a,
                _ => id,
            };
            let k = Shard::assign(key, n) as usize;
            loop {
                if pending[k].is_none() {
                    let mut rec = csv::StringRecord::new();
                    if readers[k]
                        .read_record(&mut rec)
                        .map_err(|e| io(csv_err(parts[k], line[k] + 1, &e)))?
                    {
                        line[k] += 1;
                        pending[k] = Some(rec);
                    } else {
                        break;
                    }
                }
                let Some(rec) = pending[k].as_ref() else {
                    break;
                };
                let from_row = rec.get(id_col[k]) == Some(id)
                    || aug_col[k].and_then(|c| rec.get(c)) == Some(id);
                if !from_row {
                    break;
                }
                wtr.write_record(maps[k].iter().map(|c| c.and_then(|c| rec.get(c)).unwrap_or("")))?;
                taken[k] += 1;
                total += 1;
                pending[k] = None;
            }
        }
        for k in 0..parts.len() {
            let extra = pending[k].is_some()
                || readers[k]
                    .read_record(&mut csv::StringRecord::new())
                    .map_err(|e| io(csv_err(parts[k], line[k] + 1, &e)))?;
            if extra {
                return Err(std::io::Error::other(format!(
                    "{}: line {}: rows that do not follow the input manifest {} (a part of another run?)",
                    file_name(parts[k]),
                    line[k] + u64::from(pending[k].is_none()),
                    input.display()
                )));
            }
            if taken[k] != metas[k].rows {
                return Err(std::io::Error::other(format!(
                    "{}: {} rows, its sidecar says {} (truncated?)",
                    file_name(parts[k]),
                    taken[k],
                    metas[k].rows
                )));
            }
        }
        wtr.flush()
    })
    .map_err(|e| match e {
        CoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::Other => {
            shard_err(source.to_string())
        }
        other => other,
    })?;
    Ok(MergedFile {
        path: target,
        parts: n,
        rows: total,
    })
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

/// The header an unsharded run writes, from its parts' headers: all equal → that one; manifests → the
/// [`Manifest::columns`] rule over the union (required, `split` if any part has it, the common extra prefix,
/// the other columns sorted).
fn merged_header(headers: &[Vec<String>]) -> Result<Vec<String>, String> {
    if headers.windows(2).all(|w| w[0] == w[1]) {
        return Ok(headers[0].clone());
    }
    let req: Vec<String> = REQUIRED_COLUMNS.iter().map(|c| c.to_string()).collect();
    if !headers.iter().all(|h| h.starts_with(&req)) {
        return Err("parts have different headers and are not manifests".into());
    }
    let has_split = headers
        .iter()
        .any(|h| h.get(req.len()).map(String::as_str) == Some("split"));
    let rests: Vec<&[String]> = headers
        .iter()
        .map(|h| {
            let r = &h[req.len()..];
            if r.first().map(String::as_str) == Some("split") {
                &r[1..]
            } else {
                r
            }
        })
        .collect();
    // The common prefix holds the input's extra columns (plus, harmlessly, the smallest new ones every part
    // has: those sort first anyway).
    let mut prefix = 0;
    while rests
        .iter()
        .all(|r| r.len() > prefix && r[prefix] == rests[0][prefix])
    {
        prefix += 1;
    }
    let mut cols = req;
    if has_split {
        cols.push("split".into());
    }
    cols.extend(rests[0][..prefix].iter().cloned());
    let fixed: BTreeSet<String> = cols.iter().cloned().collect();
    let new: BTreeSet<String> = rests
        .iter()
        .flat_map(|r| r[prefix..].iter().cloned())
        .filter(|c| !fixed.contains(c))
        .collect();
    cols.extend(new);
    Ok(cols)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn sh(i: u32, n: u32) -> Shard {
        Shard::new(i, n).unwrap()
    }

    #[test]
    fn flag_parses_and_rejects_nonsense() {
        assert_eq!("2/3".parse::<Shard>().unwrap(), sh(2, 3));
        assert_eq!(" 0 / 1 ".parse::<Shard>().unwrap(), sh(0, 1));
        for bad in ["3/3", "1/0", "a/3", "1", "-1/3", "0/99999999"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!(sh(1, 3).to_string(), "1/3");
    }

    #[test]
    fn assignment_is_the_documented_sha256_rule_and_covers_every_shard() {
        // sha256("abc") starts ba7816bf8f01cfea: that, big-endian, mod 7.
        let expected = (0xba78_16bf_8f01_cfeau64 % 7) as u32;
        assert_eq!(Shard::assign("abc", 7), expected);
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            counts[Shard::assign(&format!("img{i:05}"), 3) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 900), "{counts:?}");
        assert_eq!(Shard::assign("anything", 1), 0);
    }

    #[test]
    fn augmented_rows_follow_their_original() {
        let mut r = ManifestRecord {
            id: "x.aug3".into(),
            source: crate::SourceId::new("nih").unwrap(),
            label: crate::Label::Covid,
            patient: String::new(),
            view: String::new(),
            path: PathBuf::from("x.png"),
            format: crate::ImageFormat::Png,
            sha256: String::new(),
            split: None,
            extra: BTreeMap::new(),
        };
        r.set("aug_of", "x");
        assert_eq!(row_key(&r), "x");
        r.set("aug_of", "");
        assert_eq!(row_key(&r), "x.aug3");
    }

    #[test]
    fn part_paths() {
        assert_eq!(
            sh(1, 3).part_path(Path::new("out/manifest.csv")),
            PathBuf::from("out/manifest.part-1-of-3.csv")
        );
        assert_eq!(
            parse_part_name("features.part-12-of-40.csv"),
            Some(("features".into(), 12, 40))
        );
        assert_eq!(parse_part_name("manifest.csv"), None);
        assert_eq!(parse_part_name("manifest.part-1-of-3.json"), None);
    }

    #[test]
    fn no_environment_is_a_whole_run() {
        assert_eq!(resolve(None, env(&[])).unwrap(), None);
        // Empty values count as unset.
        assert_eq!(
            resolve(None, env(&[("JOB_COMPLETION_INDEX", "")])).unwrap(),
            None
        );
    }

    #[test]
    fn slurm_arrays_map_to_zero_based_shards() {
        // --array=0-2: ID, COUNT, MIN, MAX all set (as Slurm does).
        let e = env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "2"),
        ]);
        assert_eq!(
            resolve(None, e).unwrap(),
            Some((sh(2, 3), ShardSource::Slurm))
        );
        // --array=1-4: an array that does not start at 0.
        let e = env(&[
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "4"),
        ]);
        assert_eq!(
            resolve(None, e).unwrap(),
            Some((sh(0, 4), ShardSource::Slurm))
        );
        // --array=10-20:5 → 10, 15, 20.
        let e = env(&[
            ("SLURM_ARRAY_TASK_ID", "15"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "10"),
            ("SLURM_ARRAY_TASK_MAX", "20"),
            ("SLURM_ARRAY_TASK_STEP", "5"),
        ]);
        assert_eq!(
            resolve(None, e).unwrap(),
            Some((sh(1, 3), ShardSource::Slurm))
        );
        // Only ID and COUNT: a 0-based array.
        let e = env(&[
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ]);
        assert_eq!(
            resolve(None, e).unwrap(),
            Some((sh(1, 2), ShardSource::Slurm))
        );
        // A list (--array=0,3,7): MIN/MAX say 8 steps, COUNT 3: refused, not guessed.
        let e = env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "7"),
        ]);
        let msg = resolve(None, e).unwrap_err().to_string();
        assert!(msg.contains("--shard"), "{msg}");
    }

    #[test]
    fn kubernetes_indexed_jobs_need_the_count() {
        let e = env(&[("JOB_COMPLETION_INDEX", "4"), ("CXR_SHARD_COUNT", "5")]);
        assert_eq!(
            resolve(None, e).unwrap(),
            Some((sh(4, 5), ShardSource::Kubernetes))
        );
        let e = env(&[("JOB_COMPLETION_INDEX", "5"), ("CXR_SHARD_COUNT", "5")]);
        assert!(resolve(None, e).is_err());
    }

    #[test]
    fn half_set_environments_are_errors() {
        for pairs in [
            &[("JOB_COMPLETION_INDEX", "1")][..],
            &[("CXR_SHARD_COUNT", "3")][..],
            &[("SLURM_ARRAY_TASK_ID", "1")][..],
            &[("SLURM_ARRAY_TASK_COUNT", "3")][..],
            &[("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_MIN", "0")][..],
            &[
                ("SLURM_ARRAY_TASK_ID", "x"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ][..],
        ] {
            let msg = resolve(None, env(pairs)).unwrap_err().to_string();
            assert!(
                msg.contains("half-set") || msg.contains("not an integer"),
                "{pairs:?}: {msg}"
            );
        }
    }

    #[test]
    fn the_flag_wins_over_both_environments() {
        let e = env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("JOB_COMPLETION_INDEX", "1"),
            ("CXR_SHARD_COUNT", "2"),
        ]);
        assert_eq!(
            resolve(Some(sh(0, 5)), &e).unwrap(),
            Some((sh(0, 5), ShardSource::Flag))
        );
        // Without the flag Slurm comes before Kubernetes.
        assert_eq!(
            resolve(None, &e).unwrap(),
            Some((sh(2, 3), ShardSource::Slurm))
        );
        // Even a half-set environment does not matter when the flag is given.
        let half = env(&[("JOB_COMPLETION_INDEX", "1")]);
        assert!(resolve(Some(sh(0, 2)), half).is_ok());
    }

    #[test]
    fn merged_header_follows_the_manifest_column_rule() {
        let h = |cols: &[&str]| -> Vec<String> {
            REQUIRED_COLUMNS
                .iter()
                .copied()
                .chain(cols.iter().copied())
                .map(String::from)
                .collect()
        };
        // Part 0 has a split and a late column, part 1 is empty (no new columns at all).
        let merged = merged_header(&[
            h(&["split", "e1", "a", "z"]),
            h(&["e1"]),
            h(&["e1", "a", "m"]),
        ])
        .unwrap();
        assert_eq!(merged, h(&["split", "e1", "a", "m", "z"]));
        assert!(merged_header(&[vec!["id".into()], vec!["x".into()]]).is_err());
    }

    fn toy_manifest(n: usize, augment: bool) -> Manifest {
        let mut records = Vec::new();
        for i in 0..n {
            for k in 0..if augment { 3 } else { 1 } {
                let id = if augment {
                    format!("img{i:03}.aug{k}")
                } else {
                    format!("img{i:03}")
                };
                let mut r = ManifestRecord {
                    id,
                    source: crate::SourceId::new("nih").unwrap(),
                    label: crate::Label::Covid,
                    patient: format!("p{i}"),
                    view: "PA".into(),
                    path: PathBuf::from(format!("in/{i}.png")),
                    format: crate::ImageFormat::Png,
                    sha256: format!("{i:064x}"),
                    split: (i % 7 == 0).then_some(crate::Split::Train),
                    extra: BTreeMap::new(),
                };
                r.set("note", format!("a \"quoted\", {i}"));
                if augment {
                    r.set("aug_of", format!("img{i:03}"));
                }
                // A column only some rows set: a shard may lack it altogether.
                if i % 11 == 3 {
                    r.set("rare", "x");
                }
                records.push(r);
            }
        }
        let mut m = Manifest::new(records);
        m.extra_columns = vec!["note".into()];
        m
    }

    /// Writes `m`'s rows of each shard as parts (what a sharded stage does) and the unsharded file.
    fn write_parts(dir: &Path, input: &Path, m: &Manifest, n: u32, config: &str) {
        let sha = fsutil::sha256_file(input).unwrap();
        for k in 0..n {
            let s = sh(k, n);
            let part = s.part_path(&dir.join("manifest.csv"));
            let sub = s.filter(m);
            sub.write(&part).unwrap();
            let meta = PartMeta {
                stage: "test".into(),
                shard: k,
                count: n,
                input_manifest: input.to_path_buf(),
                input_sha256: sha.clone(),
                config_hash: config.into(),
                rows: sub.records.len() as u64,
                part_sha256: String::new(),
                inputs: BTreeMap::from([("model".to_string(), "m1".to_string())]),
            };
            write_part_meta(&part, &meta).unwrap();
        }
    }

    /// A later group failing (a missing rejects part) leaves no merged file of an earlier group behind.
    #[test]
    fn merge_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let m = toy_manifest(40, false);
        let input = dir.path().join("input.csv");
        m.write(&input).unwrap();
        let parts = dir.path().join("parts");
        write_parts(&parts, &input, &m, 4, "c1");
        for k in 0..3 {
            for ext in ["csv", "json"] {
                std::fs::copy(
                    parts.join(format!("manifest.part-{k}-of-4.{ext}")),
                    parts.join(format!("rejects.part-{k}-of-4.{ext}")),
                )
                .unwrap();
            }
        }
        let msg = merge_dir(&parts, None).unwrap_err().to_string();
        assert!(msg.contains("rejects.part-3-of-4.csv"), "{msg}");
        let names: Vec<String> = std::fs::read_dir(&parts)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.contains(".part-"))
            .collect();
        assert!(names.is_empty(), "left behind: {names:?}");
        // With the part back, both files appear.
        for ext in ["csv", "json"] {
            std::fs::copy(
                parts.join(format!("manifest.part-3-of-4.{ext}")),
                parts.join(format!("rejects.part-3-of-4.{ext}")),
            )
            .unwrap();
        }
        assert_eq!(merge_dir(&parts, None).unwrap().len(), 2);
        assert!(parts.join("manifest.csv").is_file() && parts.join("rejects.csv").is_file());
    }

    /// A part cut inside its last field or with a flipped label keeps its row count: its content hash tells.
    /// A part made with another model (an input of the sidecar) is refused too. Each message names the part.
    #[test]
    fn merge_refuses_parts_whose_bytes_or_inputs_differ_from_their_sidecars() {
        let dir = tempfile::tempdir().unwrap();
        let m = toy_manifest(30, false);
        let input = dir.path().join("input.csv");
        m.write(&input).unwrap();
        let fresh = |name: &str| {
            let p = dir.path().join(name);
            write_parts(&p, &input, &m, 3, "c1");
            assert!(merge_dir(&p, None).is_ok());
            std::fs::remove_file(p.join("manifest.csv")).unwrap();
            p
        };
        let refused = |p: &Path, part: &str, words: &[&str]| {
            let before = count_csv_rows(&p.join(part)).unwrap();
            let meta: PartMeta = serde_json::from_slice(
                &std::fs::read(p.join(part).with_extension("json")).unwrap(),
            )
            .unwrap();
            assert_eq!(before, meta.rows, "the row count alone would not tell");
            let msg = merge_dir(p, None).unwrap_err().to_string();
            assert!(msg.contains(part), "{msg}");
            for w in words {
                assert!(msg.contains(w), "{w}: {msg}");
            }
            assert!(!p.join("manifest.csv").exists());
        };

        let p = fresh("cut");
        let part = p.join("manifest.part-2-of-3.csv");
        let bytes = std::fs::read(&part).unwrap();
        std::fs::write(&part, &bytes[..bytes.len() - 3]).unwrap();
        refused(
            &p,
            "manifest.part-2-of-3.csv",
            &["differ from the sha256", "rerun"],
        );

        let p = fresh("flip");
        let part = p.join("manifest.part-1-of-3.csv");
        let text = std::fs::read_to_string(&part).unwrap();
        let flipped = text.replacen(",covid,", ",pneumonia,", 1);
        assert_ne!(flipped, text);
        std::fs::write(&part, flipped).unwrap();
        refused(&p, "manifest.part-1-of-3.csv", &["differ from the sha256"]);

        let p = fresh("model");
        let side = p.join("manifest.part-1-of-3.json");
        let text = std::fs::read_to_string(&side).unwrap();
        std::fs::write(&side, text.replace("\"m1\"", "\"m2\"")).unwrap();
        refused(&p, "manifest.part-1-of-3.csv", &["another model"]);

        // A sidecar of an older version (no content hash) is refused, not trusted.
        let p = fresh("old");
        let side = p.join("manifest.part-0-of-3.json");
        let mut meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&side).unwrap()).unwrap();
        meta.as_object_mut().unwrap().remove("part_sha256");
        std::fs::write(&side, serde_json::to_vec(&meta).unwrap()).unwrap();
        refused(&p, "manifest.part-0-of-3.csv", &["no content hash"]);
    }

    #[test]
    fn merge_equals_the_unsharded_file_and_refuses_bad_parts() {
        for augment in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let m = toy_manifest(60, augment);
            let input = dir.path().join("input.csv");
            m.write(&input).unwrap();
            let parts = dir.path().join("parts");
            write_parts(&parts, &input, &m, 4, "c1");
            let merged = merge_dir(&parts, None).unwrap();
            assert_eq!(merged.len(), 1);
            assert_eq!(merged[0].rows, m.records.len() as u64);
            assert_eq!(
                std::fs::read(parts.join("manifest.csv")).unwrap(),
                m.to_csv().unwrap(),
                "augment {augment}"
            );

            // A part from another input manifest.
            let other = dir.path().join("other.csv");
            toy_manifest(61, augment).write(&other).unwrap();
            let odd = dir.path().join("odd");
            write_parts(&odd, &input, &m, 4, "c1");
            let donor = dir.path().join("donor");
            write_parts(&donor, &other, &toy_manifest(61, augment), 4, "c1");
            for ext in ["csv", "json"] {
                let name = format!("manifest.part-2-of-4.{ext}");
                std::fs::copy(donor.join(&name), odd.join(&name)).unwrap();
            }
            let msg = merge_dir(&odd, None).unwrap_err().to_string();
            assert!(
                msg.contains("manifest.part-2-of-4.csv") && msg.contains("another input manifest"),
                "{msg}"
            );

            // Another config.
            let cfg = dir.path().join("cfg");
            write_parts(&cfg, &input, &m, 4, "c1");
            let side = cfg.join("manifest.part-1-of-4.json");
            let text = std::fs::read_to_string(&side)
                .unwrap()
                .replace("\"c1\"", "\"c2\"");
            std::fs::write(&side, text).unwrap();
            let msg = merge_dir(&cfg, None).unwrap_err().to_string();
            assert!(
                msg.contains("part-1-of-4") && msg.contains("config"),
                "{msg}"
            );

            // A missing part, and a part of another N.
            std::fs::remove_file(parts.join("manifest.part-3-of-4.csv")).unwrap();
            let msg = merge_dir(&parts, None).unwrap_err().to_string();
            assert!(
                msg.contains("missing part(s) manifest.part-3-of-4.csv"),
                "{msg}"
            );
            std::fs::write(parts.join("manifest.part-0-of-5.csv"), "id\n").unwrap();
            let msg = merge_dir(&parts, None).unwrap_err().to_string();
            assert!(msg.contains("mismatched parts"), "{msg}");
            std::fs::remove_file(parts.join("manifest.part-0-of-5.csv")).unwrap();

            // A duplicated part (same K, spelled twice).
            write_parts(&parts, &input, &m, 4, "c1");
            std::fs::copy(
                parts.join("manifest.part-1-of-4.csv"),
                parts.join("manifest.part-01-of-4.csv"),
            )
            .unwrap();
            let msg = merge_dir(&parts, None).unwrap_err().to_string();
            assert!(msg.contains("duplicated part 1 of 4"), "{msg}");
            std::fs::remove_file(parts.join("manifest.part-01-of-4.csv")).unwrap();

            // A truncated part (its sidecar says more rows), and a changed input.
            let p0 = parts.join("manifest.part-0-of-4.csv");
            let bytes = std::fs::read(&p0).unwrap();
            let cut = bytes.iter().rposition(|&b| b == b'\n').unwrap();
            let cut = bytes[..cut].iter().rposition(|&b| b == b'\n').unwrap() + 1;
            std::fs::write(&p0, &bytes[..cut]).unwrap();
            let msg = merge_dir(&parts, None).unwrap_err().to_string();
            assert!(
                msg.contains("manifest.part-0-of-4.csv") && msg.contains("sidecar"),
                "{msg}"
            );
            std::fs::write(&input, b"id\nchanged\n").unwrap();
            let msg = merge_dir(&parts, None).unwrap_err().to_string();
            assert!(msg.contains("changed since"), "{msg}");
        }
    }
}
