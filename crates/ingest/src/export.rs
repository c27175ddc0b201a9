//! Export to the four-file CSV format of the authors' later data preparation: `train.csv`, `val.csv`,
//! `seen_test.csv`, `unseen_test.csv`, each with `image_path,class_idx,class_name,source_name`.
//!
//! A test row is *seen* when its source also appears in the training split, else *unseen*. `class_idx` is our
//! binary target (Covid-19 = 1, other pneumonia = 0, [`cxr_core::Label::target`]); rows of other labels
//! (normal) are left out. `finetune` rows go to an extra `finetune.csv` when there are any. `image_path` is
//! absolute (the column named by `image_column`, resolved against the manifest's folder).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cxr_core::{Manifest, Split, fsutil};

use crate::error::{IngestError, Result};

/// Rows written per file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportCounts {
    pub train: usize,
    pub val: usize,
    pub seen_test: usize,
    pub unseen_test: usize,
    pub finetune: usize,
}

/// Writes the four files (and `finetune.csv` when needed) into `dir`.
pub fn export_four(manifest: &Manifest, image_column: &str, dir: &Path) -> Result<ExportCounts> {
    let train_sources: BTreeSet<String> = manifest
        .records
        .iter()
        .filter(|r| r.split == Some(Split::Train))
        .map(|r| r.source.to_string())
        .collect();
    let mut files: [(&str, Vec<[String; 4]>); 5] = [
        ("train.csv", Vec::new()),
        ("val.csv", Vec::new()),
        ("seen_test.csv", Vec::new()),
        ("unseen_test.csv", Vec::new()),
        ("finetune.csv", Vec::new()),
    ];
    for r in &manifest.records {
        let (Some(split), Some(target)) = (r.split, r.label.target()) else {
            continue;
        };
        let slot = match split {
            Split::Train => 0,
            Split::Val => 1,
            Split::Test if train_sources.contains(r.source.as_str()) => 2,
            Split::Test => 3,
            Split::Finetune => 4,
        };
        let cell = r.get(image_column).unwrap_or_default();
        if cell.is_empty() {
            return Err(IngestError::dataset(
                &manifest.base_dir,
                format!("row {}: empty image column `{image_column}`", r.id),
            ));
        }
        let p = PathBuf::from(&cell);
        let p = if p.is_absolute() {
            p
        } else {
            manifest.base_dir.join(p)
        };
        let p = std::path::absolute(&p).unwrap_or(p);
        files[slot].1.push([
            p.to_string_lossy().into_owned(),
            target.to_string(),
            r.label.to_string(),
            r.source.to_string(),
        ]);
    }
    for (i, (name, rows)) in files.iter().enumerate() {
        if i == 4 && rows.is_empty() {
            continue;
        }
        let mut w = csv::Writer::from_writer(Vec::new());
        let path = dir.join(name);
        let err = |e: csv::Error| IngestError::dataset(&path, e.to_string());
        w.write_record(["image_path", "class_idx", "class_name", "source_name"])
            .map_err(err)?;
        for row in rows {
            w.write_record(row).map_err(err)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| IngestError::dataset(&path, e.to_string()))?;
        fsutil::write_atomic(&path, &bytes)?;
    }
    Ok(ExportCounts {
        train: files[0].1.len(),
        val: files[1].1.len(),
        seen_test: files[2].1.len(),
        unseen_test: files[3].1.len(),
        finetune: files[4].1.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::tests::rec;
    use cxr_core::Label;

    #[test]
    fn four_files_split_seen_and_unseen() {
        let mut v = Vec::new();
        for (id, src, label, split) in [
            ("a", "nih", Label::Pneumonia, Split::Train),
            ("b", "v2-cov19-nii", Label::Covid, Split::Train),
            ("c", "nih", Label::Pneumonia, Split::Val),
            ("d", "nih", Label::Pneumonia, Split::Test),
            ("e", "bimcv", Label::Covid, Split::Test),
            ("f", "cohen:x", Label::Normal, Split::Test),
        ] {
            let mut r = rec(id, src, label, id);
            r.split = Some(split);
            v.push(r);
        }
        let mut m = Manifest::new(v);
        m.base_dir = PathBuf::from("/data/m");
        let dir = tempfile::tempdir().unwrap();
        let c = export_four(&m, "path", dir.path()).unwrap();
        assert_eq!(
            c,
            ExportCounts {
                train: 2,
                val: 1,
                seen_test: 1,
                unseen_test: 1,
                finetune: 0
            }
        );
        let unseen = std::fs::read_to_string(dir.path().join("unseen_test.csv")).unwrap();
        assert_eq!(
            unseen,
            "image_path,class_idx,class_name,source_name\n/data/m/e.png,1,covid,bimcv\n"
        );
        let train = std::fs::read_to_string(dir.path().join("train.csv")).unwrap();
        assert!(train.contains("/data/m/a.png,0,pneumonia,nih"));
        assert!(!dir.path().join("finetune.csv").exists());
        assert!(
            export_four(&m, "png8", dir.path())
                .unwrap_err()
                .to_string()
                .contains("png8")
        );
    }
}
