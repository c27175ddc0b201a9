//! The experiment definitions and split designs of `data-manifests/`, built into the library so that an
//! installed `cxr reproduce` runs from any folder. A folder given by the user
//! ([`crate::StudyConfig::experiments_dir`], `splits_dir`) replaces the built-in set.

use std::path::{Path, PathBuf};

use crate::error::{Context as _, Result, StudyError};

macro_rules! embed {
    ($dir:literal: $($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../../data-manifests/", $dir, "/", $name, ".toml")))),*]
    };
}

/// `data-manifests/experiments/<name>.toml`, by name (sorted; a test checks that every file is here).
pub const EXPERIMENTS: &[(&str, &str)] = embed!("experiments":
    "cohen-leave-locations-out",
    "figure4-split1",
    "figure4-split2",
    "table3-mixed",
    "table4-local-finetune",
    "whole-image-split1",
);

/// `data-manifests/splits/<name>.toml`, by name (sorted).
pub const SPLITS: &[(&str, &str)] = embed!("splits":
    "cohen-locations",
    "finetune",
    "mixed",
    "split1",
    "split2",
);

/// The built-in split design `name` (TOML text), as `data-manifests/splits/<name>.toml` holds it.
pub fn split_design(name: &str) -> Option<&'static str> {
    SPLITS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The built-in experiment definition `name` (TOML text).
pub fn experiment(name: &str) -> Option<&'static str> {
    EXPERIMENTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
}

/// Where a run reads its definitions: a folder each, or the built-in set (`None`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Definitions {
    pub experiments: Option<PathBuf>,
    pub splits: Option<PathBuf>,
}

/// One definition file: where it came from (for messages) and its text.
pub(crate) struct Text {
    pub origin: PathBuf,
    pub text: String,
}

fn built_in(dir: &str, name: &str) -> PathBuf {
    Path::new("data-manifests")
        .join(dir)
        .join(format!("{name}.toml (built in)"))
}

impl Definitions {
    /// Where the experiment definitions come from, in words.
    pub fn experiments_origin(&self) -> String {
        match &self.experiments {
            Some(d) => d.display().to_string(),
            None => "the built-in data-manifests/experiments".into(),
        }
    }

    /// Every experiment definition, sorted by file name.
    pub(crate) fn experiment_texts(&self) -> Result<Vec<Text>> {
        let Some(dir) = &self.experiments else {
            return Ok(EXPERIMENTS
                .iter()
                .map(|(name, text)| Text {
                    origin: built_in("experiments", name),
                    text: (*text).to_string(),
                })
                .collect());
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .ctx(|| format!("reading experiment folder {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).map_err(|e| StudyError::io(&p, e))?;
                Ok(Text { origin: p, text })
            })
            .collect()
    }

    /// The split design `name`: `<splits>/<name>.toml`, or the built-in one.
    pub fn split_design(&self, name: &str) -> Result<cxr_ingest::SplitDesign> {
        let (origin, text) = match &self.splits {
            Some(dir) => {
                let p = dir.join(format!("{name}.toml"));
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| StudyError::io(&p, e))
                    .ctx(|| format!("reading split design {}", p.display()))?;
                (p, text)
            }
            None => {
                let text = split_design(name).ok_or_else(|| {
                    StudyError::Invalid(format!(
                        "no built-in split design `{name}` (built in: {}); give a folder of designs",
                        SPLITS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    ))
                })?;
                (built_in("splits", name), text.to_string())
            }
        };
        cxr_ingest::SplitDesign::parse(&text, &origin)
            .ctx(|| format!("reading split design {}", origin.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `*.toml` of `data-manifests/<dir>`, by name, with its text.
    fn on_disk(dir: &str) -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../data-manifests")
            .join(dir);
        let mut files: Vec<(String, String)> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        files.sort();
        files
    }

    fn embedded(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn every_definition_file_is_built_in() {
        // A new file in either folder must be added to the lists above (and nothing else is there).
        assert_eq!(embedded(EXPERIMENTS), on_disk("experiments"));
        assert_eq!(embedded(SPLITS), on_disk("splits"));
    }

    #[test]
    fn built_in_designs_parse_and_a_folder_wins() {
        let defs = Definitions::default();
        for (name, _) in SPLITS {
            defs.split_design(name).unwrap();
        }
        assert!(split_design("split1").unwrap().contains("[[assign]]"));
        let err = defs.split_design("nope").unwrap_err().to_string();
        assert!(err.contains("no built-in split design `nope`"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let mine = split_design("split1")
            .unwrap()
            .replace("name = \"split1\"", "name = \"mine\"");
        assert_ne!(
            mine,
            split_design("split1").unwrap(),
            "the design names itself"
        );
        std::fs::write(dir.path().join("split1.toml"), &mine).unwrap();
        let given = Definitions {
            splits: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        assert_eq!(given.split_design("split1").unwrap().name, "mine");
    }
}
