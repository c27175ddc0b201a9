//! `cxr manifest ...`: build a dataset's manifest, check it, apply a split design, lint the split,
//! export the authors' four-file format.
//!
//! `cxr manifest --dataset NAME --root DIR --out FILE.csv` (the form) and
//! `cxr manifest build --dataset ...` do the same thing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use cxr_core::Manifest;
use cxr_core::privacy::Pseudonymizer;
use cxr_ingest::{LintReport, SplitDesign, adapters};

/// `cxr manifest`: either a subcommand, or the build flags directly.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ManifestArgs {
    #[command(subcommand)]
    command: Option<ManifestCommand>,
    #[command(flatten)]
    build: Option<BuildArgs>,
}

#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Scan a dataset root with its adapter and write the manifest (same as `manifest --dataset ...`).
    Build(BuildArgs),
    /// Parse a manifest, check its columns and values, and print images per source and label.
    Check {
        /// The manifest CSV.
        file: PathBuf,
    },
    /// Apply a split design (TOML, `data-manifests/splits/`) to a manifest: writes it with a `split` column.
    Split {
        /// The input manifest CSV.
        manifest: PathBuf,
        /// The split design (TOML); a bare name is looked up in `data-manifests/splits/NAME.toml`.
        #[arg(long)]
        design: String,
        /// Output manifest CSV.
        #[arg(long)]
        out: PathBuf,
        /// Multiply every image count of the design (e.g. 0.1 for a small synthetic world).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
    },
    /// Lint a split manifest: label × source per split, Cramér's V, single-class sources, patient and file
    /// leaks between splits. Exit status 1 when a split is fully confounded or leaks (with `--strict`).
    Lint {
        /// The manifest CSV (with a `split` column).
        file: PathBuf,
        /// Also write the report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Fail (exit 1) on errors: a fully confounded split, patient overlap or duplicate files.
        #[arg(long)]
        strict: bool,
    },
    /// Export a split manifest to the authors' four files (train/val/seen_test/unseen_test.csv).
    ExportFour {
        /// The manifest CSV (with a `split` column).
        file: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Column holding the image path (`path`, `png8`, `crop`).
        #[arg(long, default_value = "path")]
        image_column: String,
    },
    /// Join the parts of sharded runs in DIR (`manifest.part-K-of-N.csv`, `rejects.part-K-of-N.csv`,
    /// `features.part-K-of-N.csv`, ...) into `manifest.csv`, `rejects.csv`, `features.csv`: streamed, in the
    /// input manifest's row order, byte for byte what an unsharded run writes. Refuses missing, duplicated or
    /// mismatched parts.
    Merge {
        /// The folder holding the parts (a stage's `--out`).
        dir: PathBuf,
        /// The input manifest the shards read (default: the one named in the parts' sidecars).
        #[arg(long)]
        input: Option<PathBuf>,
    },
    /// List the dataset adapters.
    Datasets,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Dataset adapter: bimcv, covid19-ar, v2-cov19-nii, nih, chexpert, padchest, cohen.
    #[arg(long)]
    dataset: String,
    /// The dataset root (official layout).
    #[arg(long)]
    root: PathBuf,
    /// Output manifest CSV; paths in it are relative to its folder.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: ManifestArgs) -> Result<()> {
    let cmd = match (args.command, args.build) {
        (Some(c), _) => c,
        (None, Some(b)) => ManifestCommand::Build(b),
        (None, None) => {
            bail!("manifest: give a subcommand or --dataset NAME --root DIR --out FILE.csv")
        }
    };
    match cmd {
        ManifestCommand::Build(b) => {
            let summary = build(&b.dataset, &b.root, &b.out)?;
            print!("{summary}");
        }
        ManifestCommand::Check { file } => print!("{}", check(&file)?),
        ManifestCommand::Merge { dir, input } => crate::shard::merge(&dir, input.as_deref())?,
        ManifestCommand::Split {
            manifest,
            design,
            out,
            scale,
        } => {
            print!("{}", split(&manifest, &design, &out, scale)?)
        }
        ManifestCommand::Lint { file, json, strict } => {
            let report = lint(&file)?;
            print!("{}", render_lint(&report, &file, LINT_ROWS));
            if let Some(j) = json {
                let bytes = serde_json::to_vec_pretty(&report)?;
                cxr_core::fsutil::write_atomic(&j, &bytes)
                    .with_context(|| format!("writing {}", j.display()))?;
            }
            // The exit status agrees with what was printed: `error:` lines fail the command, and `--strict`
            // fails on warnings too.
            let errors = report
                .findings
                .iter()
                .filter(|f| f.severity == "error")
                .count();
            if errors > 0 {
                bail!(
                    "{}: the split has {errors} error(s) (see above)",
                    file.display()
                );
            }
            if strict && !report.findings.is_empty() {
                bail!(
                    "{}: the split has warnings and --strict was given",
                    file.display()
                );
            }
        }
        ManifestCommand::ExportFour {
            file,
            out,
            image_column,
        } => {
            let m = read(&file)?;
            let c = cxr_ingest::export_four(&m, &image_column, &out)
                .with_context(|| format!("exporting {} to {}", file.display(), out.display()))?;
            println!(
                "{}: train {}, val {}, seen_test {}, unseen_test {}{}",
                out.display(),
                c.train,
                c.val,
                c.seen_test,
                c.unseen_test,
                if c.finetune > 0 {
                    format!(", finetune {}", c.finetune)
                } else {
                    String::new()
                }
            );
        }
        ManifestCommand::Datasets => {
            for a in adapters::all() {
                println!("{:<14} {}", a.name(), a.describe());
            }
        }
    }
    Ok(())
}

fn read(file: &Path) -> Result<Manifest> {
    Manifest::read(file).with_context(|| format!("reading manifest {}", file.display()))
}

/// Scans `root` with the named adapter and writes the manifest to `out`; returns a summary.
pub fn build(dataset: &str, root: &Path, out: &Path) -> Result<String> {
    let manifest = scan(dataset, root)?;
    cxr_ingest::write_manifest(&manifest.0, out)
        .with_context(|| format!("writing {}", out.display()))?;
    let mut s = format!(
        "{dataset}: {} images from {} -> {}\n",
        manifest.0.records.len(),
        root.display(),
        out.display()
    );
    if manifest.1 > 0 {
        s.push_str(&format!(
            "  {} selected rows name a file that is absent\n",
            manifest.1
        ));
    }
    if manifest.2 > 0 {
        s.push_str(&format!(
            "  {} files are not a readable image format\n",
            manifest.2
        ));
    }
    s.push_str(&table(&manifest.0));
    Ok(s)
}

/// Scans a dataset root into a manifest (absolute paths): the library call `reproduce` uses.
/// Returns the manifest, the number of selected-but-absent files and of rejected files.
pub fn scan(dataset: &str, root: &Path) -> Result<(Manifest, usize, usize)> {
    let Some(adapter) = adapters::by_name(dataset) else {
        let names: Vec<_> = adapters::all().iter().map(|a| a.name()).collect();
        bail!("unknown dataset {dataset:?} (known: {})", names.join(", "));
    };
    let out = cxr_ingest::scan(adapter.as_ref(), root, &Pseudonymizer::from_env())
        .with_context(|| format!("ingest {dataset}: scanning {}", root.display()))?;
    Ok((out.manifest, out.missing.len(), out.rejected.len()))
}

/// Resolves a design argument: a file path, or a name in `data-manifests/splits/`.
pub fn design_path(design: &str) -> PathBuf {
    let p = PathBuf::from(design);
    if p.is_file() || design.contains('/') || design.ends_with(".toml") {
        return p;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data-manifests/splits")
        .join(format!("{design}.toml"))
}

/// Applies a split design to a manifest file and writes the result; returns a summary.
pub fn split(manifest: &Path, design: &str, out: &Path, scale: f64) -> Result<String> {
    let m = read(manifest)?;
    let dpath = design_path(design);
    let d = SplitDesign::read(&dpath)
        .with_context(|| format!("reading split design {}", dpath.display()))?;
    let (split, report) = cxr_ingest::apply_split(&m, &d, scale)
        .with_context(|| format!("applying {} to {}", dpath.display(), manifest.display()))?;
    cxr_ingest::write_manifest(&split, out)
        .with_context(|| format!("writing {}", out.display()))?;
    let mut s = format!(
        "{}: design {} -> {}\n",
        manifest.display(),
        d.name,
        out.display()
    );
    for (sp, n) in &report.per_split {
        s.push_str(&format!("  {sp:<9} {n}\n"));
    }
    if report.unassigned > 0 {
        s.push_str(&format!(
            "  {} rows left out (label outside the design or no step took them)\n",
            report.unassigned
        ));
    }
    for (step, want, got) in &report.shortfalls {
        s.push_str(&format!(
            "  warning: step {step} wanted {want} images, the pool had {got} (try --scale)\n"
        ));
    }
    Ok(s)
}

/// Sources shown per split on the terminal; `--json` holds them all.
const LINT_ROWS: usize = 12;

/// The linter's findings for a terminal (`LintReport::render`: each split's table cut to its `rows` largest
/// sources), or a plain sentence naming the command to run when the manifest holds no split at all.
pub fn render_lint(report: &LintReport, file: &Path, rows: usize) -> String {
    if report.splits.is_empty() {
        return format!(
            "{}: no row has a split, so there is no split to lint ({} rows); apply a design first \
             (cxr manifest split {} --design NAME --out OUT.csv)\n",
            file.display(),
            report.unsplit,
            file.display()
        );
    }
    report.render(rows)
}

/// Lints a split manifest file.
pub fn lint(file: &Path) -> Result<LintReport> {
    Ok(cxr_ingest::lint(&read(file)?))
}

/// Reads a manifest and renders a `source × label` count table. One streamed pass: memory is the count table
/// plus the reader's 16 bytes per row (`cxr_core::manifest::ManifestRows`), whatever the row count.
pub fn check(file: &Path) -> Result<String> {
    let context = || format!("reading manifest {}", file.display());
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut n = 0usize;
    for r in Manifest::stream(file, None).with_context(context)? {
        let r = r.with_context(context)?;
        *counts
            .entry((r.source.to_string(), r.label.to_string()))
            .or_default() += 1;
        n += 1;
    }
    Ok(format!(
        "{}: {n} images\n{}",
        file.display(),
        render_counts(counts)
    ))
}

fn table(manifest: &Manifest) -> String {
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &manifest.records {
        *counts
            .entry((r.source.to_string(), r.label.to_string()))
            .or_default() += 1;
    }
    render_counts(counts)
}

fn render_counts(counts: BTreeMap<(String, String), usize>) -> String {
    let mut out = String::new();
    for ((source, label), n) in counts {
        out.push_str(&format!("  {source:<24} {label:<10} {n}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_counts_and_reports_bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("m.csv");
        std::fs::write(
            &good,
            "id,source,label,patient,view,path,format,sha256\n\
             a,nih,pneumonia,p1,PA,a.png,png,00\n\
             b,nih,pneumonia,p2,PA,b.png,png,00\n\
             c,bimcv,covid,p3,AP,c.png,png,00\n",
        )
        .unwrap();
        let out = check(&good).unwrap();
        assert!(out.contains("3 images"), "{out}");
        assert!(
            out.lines()
                .any(|l| l.contains("nih") && l.trim_end().ends_with('2')),
            "{out}"
        );

        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "id,source\na,nih\n").unwrap();
        let msg = format!("{:#}", check(&bad).unwrap_err());
        assert!(msg.contains("bad.csv") && msg.contains("label"), "{msg}");
    }

    #[test]
    fn cli_parses_and_runs() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("m.csv");
        std::fs::write(
            &good,
            "id,source,label,patient,view,path,format,sha256\na,nih,pneumonia,p1,PA,a.png,png,00\n",
        )
        .unwrap();
        crate::run(["xtask", "manifest", "check", good.to_str().unwrap()]).unwrap();
        let err = crate::run(["xtask", "manifest", "check", "/nonexistent/m.csv"]).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/m.csv"));
        assert!(crate::run(["xtask", "no-such-command"]).is_err());
        // Both forms of build parse; a bad dataset name is reported with the known ones.
        let root = dir.path().to_str().unwrap();
        let out = dir.path().join("o.csv");
        let out = out.to_str().unwrap();
        for args in [
            vec![
                "xtask",
                "manifest",
                "--dataset",
                "mnist",
                "--root",
                root,
                "--out",
                out,
            ],
            vec![
                "xtask",
                "manifest",
                "build",
                "--dataset",
                "mnist",
                "--root",
                root,
                "--out",
                out,
            ],
        ] {
            let msg = format!("{:#}", crate::run(args).unwrap_err());
            assert!(
                msg.contains("unknown dataset") && msg.contains("cohen"),
                "{msg}"
            );
        }
        assert!(crate::run(["xtask", "manifest"]).is_err());
        assert!(crate::run(["xtask", "manifest", "--dataset", "nih"]).is_err());
    }

    /// Scans every source of a synthetic world and checks the selection against synth's ground truth
    /// (`truth.csv`: which files the paper's rule must keep, with which label).
    fn scan_world(kind: cxr_synth::WorldKind, world: &Path) -> Manifest {
        let cfg = cxr_synth::WorldConfig {
            kind,
            per_source: 12,
            size: 64,
            lung_mask_count: 0,
            ..Default::default()
        };
        let summary = cxr_synth::generate(&cfg, world).unwrap();
        let truth = std::fs::read_to_string(world.join("truth.csv")).unwrap();
        let mut lines = truth.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
        let (c_path, c_label, c_sel) = (col("path"), col("label"), col("selected"));
        let mut expected: Vec<(PathBuf, String)> = lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f[c_sel] == "true")
            .map(|f| {
                (
                    world.canonicalize().unwrap().join(f[c_path]),
                    f[c_label].to_string(),
                )
            })
            .collect();
        expected.sort();
        let mut all = Manifest::default();
        for s in &summary.sources {
            let (m, missing, rejected) = scan(&s.id, &s.root).unwrap();
            assert_eq!((missing, rejected), (0, 0), "{}", s.id);
            assert_eq!(
                m.records.len(),
                s.selected,
                "{}: adapter selection vs synth's selected images",
                s.id
            );
            let covid = m
                .records
                .iter()
                .filter(|r| r.label == cxr_core::Label::Covid)
                .count();
            assert_eq!(covid, s.covid, "{}", s.id);
            assert!(m.records.iter().all(|r| r.source.as_str() == s.id));
            all.records.extend(m.records);
        }
        let mut got: Vec<(PathBuf, String)> = all
            .records
            .iter()
            .map(|r| (r.path.clone(), r.label.to_string()))
            .collect();
        got.sort();
        assert_eq!(got, expected, "{kind:?} world: selected files and labels");
        all
    }

    #[test]
    fn clean_world_adapters_read_both_classes() {
        let dir = tempfile::tempdir().unwrap();
        let m = scan_world(cxr_synth::WorldKind::Clean, &dir.path().join("world"));
        for src in cxr_core::SourceId::PAPER {
            let n = |l| {
                m.records
                    .iter()
                    .filter(|r| r.source.as_str() == src && r.label == l)
                    .count()
            };
            assert_eq!(
                (n(cxr_core::Label::Covid), n(cxr_core::Label::Pneumonia)),
                (6, 6),
                "{src}"
            );
        }
    }

    /// The synthetic paper world through all six adapters, split 1, the linter and the four-file export.
    #[test]
    fn synthetic_world_end_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let all = scan_world(cxr_synth::WorldKind::Paper, &dir.path().join("world"));
        let merged = dir.path().join("all.csv");
        cxr_ingest::write_manifest(&all, &merged).unwrap();
        // De-identification: synth's COVID-19-AR DICOMs carry fake names, ids and birth dates.
        let text = std::fs::read_to_string(&merged).unwrap();
        assert!(
            !text.contains("SYNTH^"),
            "a patient name leaked into the manifest"
        );
        assert!(
            all.records
                .iter()
                .all(|r| r.patient.starts_with("pat-") && r.patient.len() == 20)
        );
        // Paths were made relative to the manifest and resolve back to the files.
        let back = Manifest::read(&merged).unwrap();
        assert!(
            back.records
                .iter()
                .all(|r| r.path.is_relative() && back.resolve(r).is_file())
        );
        let split_csv = dir.path().join("split1.csv");
        split(&merged, "split1", &split_csv, 1.0).unwrap();
        let report = lint(&split_csv).unwrap();
        assert!((report.train_cramers_v.unwrap() - 1.0).abs() < 1e-9);
        assert!(report.has_errors());
        // It prints `error:` lines (a full confound), so it fails, with or without --strict.
        assert!(crate::run(["xtask", "manifest", "lint", split_csv.to_str().unwrap()]).is_err());
        assert!(
            crate::run([
                "xtask",
                "manifest",
                "lint",
                "--strict",
                split_csv.to_str().unwrap()
            ])
            .is_err()
        );
        // Long tables are cut on the terminal, never in --json.
        let text = render_lint(&report, &split_csv, 2);
        assert!(text.contains("more sources"), "{text}");
        assert!(
            text.contains("error: split train is fully confounded"),
            "{text}"
        );
        assert!(!render_lint(&report, &split_csv, 100).contains("more sources"));
        // A manifest without a split says so plainly and passes.
        let msg = render_lint(&lint(&merged).unwrap(), &merged, 12);
        assert!(msg.contains("no split to lint"), "{msg}");
        crate::run(["xtask", "manifest", "lint", merged.to_str().unwrap()]).unwrap();
        let four = dir.path().join("four");
        crate::run([
            "xtask",
            "manifest",
            "export-four",
            split_csv.to_str().unwrap(),
            "--out",
            four.to_str().unwrap(),
        ])
        .unwrap();
        let unseen = std::fs::read_to_string(four.join("unseen_test.csv")).unwrap();
        assert_eq!(unseen.lines().count(), 1 + 4 * 12, "{unseen}");
    }
}
