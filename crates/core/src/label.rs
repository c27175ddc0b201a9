//! Labels, splits and source identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// The diagnostic class of an image. The binary task of the paper is Covid-19 (positive, `1`) against other
/// pneumonia (negative, `0`); `Normal` exists because the Cohen collection ships it, and is never part of the
/// binary task.
/// Written as `covid`, `pneumonia`, `normal`; read through [`FromStr`] (the one parser of labels in the
/// workspace, for manifests, predictions and configs alike), which accepts what users write: see
/// [`Label::ACCEPTED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Covid,
    Pneumonia,
    Normal,
}

impl Label {
    pub const ALL: [Label; 3] = [Label::Covid, Label::Pneumonia, Label::Normal];

    /// What [`FromStr`] accepts, in any case, with `_` or spaces for `-`; for help texts.
    pub const ACCEPTED: &'static str = "Covid-19 (positive): 1, covid, covid-19, covid19, sars-cov-2, positive; \
         other pneumonia (negative): 0, pneumonia, non-covid, non-covid-19, noncovid, other-pneumonia, \
         negative; normal (left out of the binary task): normal, no-finding";

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
        let key: String = s
            .trim()
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c == '_' || c == ' ' { '-' } else { c })
            .collect();
        match key.as_str() {
            "covid" | "covid-19" | "covid19" | "sars-cov-2" | "positive" | "1" | "1.0" => {
                Ok(Label::Covid)
            }
            "pneumonia" | "non-covid" | "non-covid-19" | "non-covid19" | "noncovid"
            | "other-pneumonia" | "negative" | "0" | "0.0" => Ok(Label::Pneumonia),
            "normal" | "no-finding" => Ok(Label::Normal),
            _ => Err(CoreError::Parse {
                what: "label",
                value: s.to_string(),
                expected: "1/covid/covid-19, 0/pneumonia/non-covid, or normal",
            }),
        }
    }
}

impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_de(d)
    }
}

/// Reads a string (or, for CSV cells parsed as numbers, a number) through `FromStr`.
fn from_str_de<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: FromStr<Err = CoreError>,
{
    struct V<T>(std::marker::PhantomData<T>);
    impl<T: FromStr<Err = CoreError>> serde::de::Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a 0/1 number")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            v.parse().map_err(E::custom)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<T, E> {
            self.visit_str(&format!("{v:.1}"))
        }
    }
    // `any`: CSV cells are typed by their look (`1` arrives as a number), JSON labels may be numbers.
    d.deserialize_any(V(std::marker::PhantomData))
}

/// Where an image is used in an experiment. Read through [`FromStr`] (`validation` is `val`, any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
    /// The small local fine-tuning set of the paper's Table 4.
    Finetune,
}

impl<'de> Deserialize<'de> for Split {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_de(d)
    }
}

impl Split {
    pub const ALL: [Split; 4] = [Split::Train, Split::Val, Split::Test, Split::Finetune];

    /// What [`FromStr`] accepts, in any case; for help texts.
    pub const ACCEPTED: &'static str =
        "train (training), val (valid, validation), test (testing), finetune";

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
            "train" | "training" => Ok(Split::Train),
            "val" | "valid" | "validation" => Ok(Split::Val),
            "test" | "testing" => Ok(Split::Test),
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
/// collections that pool many hospitals, `dataset:location` (e.g. `cohen:hannover`). ASCII letters (in the
/// case written: a user's `hospital_A` stays `hospital_A`), digits, `-`, `_`, `.`, `:`; no commas or line
/// breaks, so it is safe in CSV cells and file names. Adapters that build ids from free text lower-case it.
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

    /// Builds a source id, making free text (e.g. a Cohen `location`) a safe slug; the case is kept.
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

/// ASCII letters, digits, `-`, `_`, `.` and `:`; anything else becomes `-`, runs collapsed.
fn slugify(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.trim().chars() {
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
            "Hannover-Germany"
        );
        assert_eq!(
            SourceId::new("cohen:san diego").unwrap().as_str(),
            "cohen:san-diego"
        );
        // Kept as written (a user's own source names).
        assert_eq!(SourceId::new("hospital_A").unwrap().as_str(), "hospital_A");
        assert!(SourceId::new(" ,, ").is_err());
    }

    #[test]
    fn splits_parse() {
        assert_eq!("validation".parse::<Split>().unwrap(), Split::Val);
        assert_eq!("Validation".parse::<Split>().unwrap(), Split::Val);
        assert!("dev".parse::<Split>().is_err());
    }

    #[test]
    fn labels_as_users_write_them() {
        for s in [
            "1",
            "Covid-19",
            "COVID",
            "covid19",
            "COVID_19",
            "SARS-CoV-2",
        ] {
            assert_eq!(s.parse::<Label>().unwrap(), Label::Covid, "{s}");
        }
        for s in [
            "0",
            "Pneumonia",
            "non-covid",
            "Non-COVID",
            "non_covid",
            "other pneumonia",
        ] {
            assert_eq!(s.parse::<Label>().unwrap(), Label::Pneumonia, "{s}");
        }
        assert!("2".parse::<Label>().is_err());
        // serde reads through the same parser (CSV and JSON alike) and writes the canonical name.
        let l: Label = serde_json::from_str("\"Covid-19\"").unwrap();
        assert_eq!(l, Label::Covid);
        let l: Label = serde_json::from_str("0").unwrap();
        assert_eq!(l, Label::Pneumonia);
        assert_eq!(serde_json::to_string(&Label::Covid).unwrap(), "\"covid\"");
        let s: Split = serde_json::from_str("\"validation\"").unwrap();
        assert_eq!(s, Split::Val);
    }
}
