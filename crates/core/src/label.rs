//! Labels, splits and source identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// The diagnostic class of an image. The binary task of the paper is Covid-19 (positive, `1`) against other
/// pneumonia (negative, `0`); `Normal` exists because the Cohen collection ships it, and is never part of the
/// binary task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Covid,
    Pneumonia,
    Normal,
}

impl Label {
    pub const ALL: [Label; 3] = [Label::Covid, Label::Pneumonia, Label::Normal];

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Covid => "covid",
            Label::Pneumonia => "pneumonia",
            Label::Normal => "normal",
        }
    }

    /// The binary target of the paper's task: Covid-19 = 1 (the positive class, whose logit the model
    /// outputs), other pneumonia = 0. `None` for labels outside the task.
    pub fn target(self) -> Option<u8> {
        match self {
            Label::Covid => Some(1),
            Label::Pneumonia => Some(0),
            Label::Normal => None,
        }
    }

    /// Inverse of [`Label::target`].
    pub fn from_target(target: u8) -> Option<Label> {
        match target {
            1 => Some(Label::Covid),
            0 => Some(Label::Pneumonia),
            _ => None,
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Label {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "covid" | "covid-19" | "covid19" | "1" => Ok(Label::Covid),
            "pneumonia" | "0" => Ok(Label::Pneumonia),
            "normal" => Ok(Label::Normal),
            _ => Err(CoreError::Parse {
                what: "label",
                value: s.to_string(),
                expected: "covid, pneumonia or normal",
            }),
        }
    }
}

/// Where an image is used in an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
    /// The small local fine-tuning set of the paper's Table 4.
    Finetune,
}

impl Split {
    pub const ALL: [Split; 4] = [Split::Train, Split::Val, Split::Test, Split::Finetune];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
            Split::Finetune => "finetune",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "val" | "valid" | "validation" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            "finetune" => Ok(Split::Finetune),
            _ => Err(CoreError::Parse {
                what: "split",
                value: s.to_string(),
                expected: "train, val, test or finetune",
            }),
        }
    }
}

/// A data source: a dataset (`bimcv`, `covid19-ar`, `v2-cov19-nii`, `nih`, `chexpert`, `padchest`) or, for
/// collections that pool many hospitals, `dataset:location` (e.g. `cohen:hannover`). Lower-case, no commas
/// or line breaks, so it is safe in CSV cells and file names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceId(String);

impl SourceId {
    pub const BIMCV: &'static str = "bimcv";
    pub const COVID19_AR: &'static str = "covid19-ar";
    pub const V2_COV19_NII: &'static str = "v2-cov19-nii";
    pub const NIH: &'static str = "nih";
    pub const CHEXPERT: &'static str = "chexpert";
    pub const PADCHEST: &'static str = "padchest";
    /// The six sources of the paper, in its order.
    pub const PAPER: [&'static str; 6] = [
        Self::BIMCV,
        Self::COVID19_AR,
        Self::V2_COV19_NII,
        Self::NIH,
        Self::CHEXPERT,
        Self::PADCHEST,
    ];

    /// Builds a source id, normalising free text (e.g. a Cohen `location`) to a safe slug.
    pub fn new(name: &str) -> Result<Self, CoreError> {
        let slug = slugify(name);
        if slug.is_empty() {
            return Err(CoreError::Parse {
                what: "source id",
                value: name.to_string(),
                expected: "a non-empty name",
            });
        }
        Ok(Self(slug))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lower-case ASCII letters, digits, `-`, `_`, `.` and `:`; anything else becomes `-`, runs collapsed.
fn slugify(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.trim().chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

impl TryFrom<String> for SourceId {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        SourceId::new(&s)
    }
}

impl From<SourceId> for String {
    fn from(s: SourceId) -> String {
        s.0
    }
}

impl FromStr for SourceId {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SourceId::new(s)
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_target() {
        for l in Label::ALL {
            assert_eq!(l.as_str().parse::<Label>().unwrap(), l);
        }
        assert_eq!(Label::Covid.target(), Some(1));
        assert_eq!(Label::Pneumonia.target(), Some(0));
        assert_eq!(Label::Normal.target(), None);
        assert_eq!(Label::from_target(1), Some(Label::Covid));
        assert!("flu".parse::<Label>().is_err());
    }

    #[test]
    fn source_ids_are_slugs() {
        assert_eq!(
            SourceId::new("Hannover, Germany").unwrap().as_str(),
            "hannover-germany"
        );
        assert_eq!(
            SourceId::new("cohen:San Diego").unwrap().as_str(),
            "cohen:san-diego"
        );
        assert!(SourceId::new(" ,, ").is_err());
    }

    #[test]
    fn splits_parse() {
        assert_eq!("validation".parse::<Split>().unwrap(), Split::Val);
        assert!("dev".parse::<Split>().is_err());
    }
}
