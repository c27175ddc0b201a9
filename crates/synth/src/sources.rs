//! The six sources and their acquisition signatures (the planted confounders).
//!
//! Every knob below is serialised into `world.json`. Ranges `[lo, hi]` are sampled uniformly per image, so a
//! source is a *distribution* of looks, as a hospital is. The signatures were chosen to mirror what differs
//! between the real datasets: processing curve (gamma, black/white level, an equalised "S" curve for NIH's
//! 8-bit PNGs), detector noise and its grain, sharpness, anti-scatter grid lines, collimation borders, burned-in
//! text and laterality markers, framing (zoom, vertical position), image size and aspect, the patients' ages,
//! bit depth and stored value range, MONOCHROME1 and the presence of window metadata.
//! Most of them live outside the lungs (borders, text, markers, framing) or in global intensity curves; noise,
//! grain, blur and grid lines also reach inside the lungs, as they do in real images.
//!
//! The in-lung textures are strong enough to survive the lung crop, the resize to 128 px and a per-image
//! standardisation (a 0.04 grid at a 10 px period, blur sigma 0.5 vs 3 px, noise 0.01 vs 0.03, at 512 px): with
//! weaker ones, the only confounder a model could follow was the global intensity curve, and standardising each
//! image erased the shortcut along with the domain shift. Sharp (V2-COV19-NII, BIMCV, CheXpert) vs soft
//! (NIH, COVID-19-AR, PadChest) and grid (V2-COV19-NII, COVID-19-AR, CheXpert) vs none are split so that both of
//! the paper's one-source-per-class training pairs (split 1: V2-COV19-NII + NIH; split 2: BIMCV + PadChest)
//! differ in them while their unseen sources mix them. The noise level is partly anti-aligned in split 1 (its
//! unseen Covid sources are quieter than its unseen pneumonia sources): the paper's split-1 unseen AUC of 0.38,
//! below chance, says its real unseen sources were too.

use cxr_core::{Label, SourceId};
use serde::{Deserialize, Serialize};

/// Where a burned-in annotation sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Corner {
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextSpec {
    pub text: String,
    pub corner: Corner,
    /// Glyph height as a fraction of the image height.
    pub height: f32,
    /// Display value (0 black .. 1 white).
    pub value: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridSpec {
    /// Period in pixels at 512 px image height.
    pub period: f32,
    /// Amplitude in display units.
    pub amplitude: f32,
    pub vertical: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollimationSpec {
    /// Probability that an image shows collimator borders.
    pub probability: f32,
    /// Maximum border width per side (top, bottom, left, right) as a fraction of the image size.
    pub max_width: [f32; 4],
    /// Display value of the unexposed border.
    pub value: f32,
}

/// The acquisition signature and file conventions of one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSpec {
    /// `cxr_core::SourceId` string.
    pub id: String,
    pub dataset: String,
    /// Folder under the world root (the dataset root).
    pub folder: String,
    /// The class the source holds in the paper world.
    pub paper_class: Label,
    pub file_format: String,
    /// Width / height, and its relative jitter; `square` forces width = height = size.
    pub aspect: f32,
    pub aspect_jitter: f32,
    pub size_jitter: f32,
    pub square: bool,
    /// Framing: body size relative to the image, and vertical shift of the thorax (fraction of height).
    pub zoom: [f32; 2],
    pub shift_y: [f32; 2],
    /// Transfer curve: display = black + (white - black) * exposure^gamma, then mixed with an S-curve.
    pub gamma: [f32; 2],
    pub black: [f32; 2],
    pub white: [f32; 2],
    pub s_curve: f32,
    /// Gaussian blur sigma in pixels at 512 px height.
    pub blur: [f32; 2],
    /// Noise standard deviation (display units) and grain (correlation radius in pixels at 512 px).
    pub noise: [f32; 2],
    pub grain: f32,
    pub grid: Option<GridSpec>,
    pub collimation: CollimationSpec,
    pub text: Option<TextSpec>,
    /// Laterality marker letter, its height (fraction of the image height) and value; drawn in a box near
    /// the top corner on the patient's side it names.
    pub marker: Option<(char, f32, f32)>,
    /// Patients' age distribution (years): mean, standard deviation, clamped to [min, max].
    pub age: [f32; 4],
    /// Stored bit depth and the stored value range as fractions of full scale (lo, hi ranges).
    pub bits_stored: u32,
    pub stored_low: [f32; 2],
    pub stored_high: [f32; 2],
    /// Fraction of images stored MONOCHROME1 (inverted), where the format can say so.
    pub monochrome1: f32,
    /// Fraction of images whose metadata carry a window centre/width (where the format has a place for it).
    pub window: f32,
    pub jpeg_quality: Option<u8>,
}

impl SourceSpec {
    pub fn label_for_paper(&self) -> Label {
        self.paper_class
    }
}

/// The six sources of the paper, in `SourceId::PAPER` order.
pub fn paper_sources() -> Vec<SourceSpec> {
    vec![
        SourceSpec {
            id: SourceId::BIMCV.into(),
            dataset: "BIMCV-COVID19+".into(),
            folder: "BIMCV-COVID19+".into(),
            paper_class: Label::Covid,
            file_format: "16-bit PNG (12-bit values) + DICOM-JSON sidecars + TSVs".into(),
            aspect: 0.86,
            aspect_jitter: 0.08,
            size_jitter: 0.08,
            square: false,
            zoom: [0.95, 1.05],
            shift_y: [0.0, 0.04],
            gamma: [0.70, 0.85],
            black: [0.06, 0.12],
            white: [0.88, 0.96],
            s_curve: 0.4,
            blur: [0.6, 0.9],
            noise: [0.016, 0.022],
            grain: 1.5,
            grid: None,
            collimation: CollimationSpec {
                probability: 0.8,
                max_width: [0.06, 0.06, 0.03, 0.03],
                value: 0.97,
            },
            text: None,
            marker: Some(('R', 0.05, 0.98)),
            age: [66.0, 14.0, 25.0, 95.0],
            bits_stored: 12,
            stored_low: [0.02, 0.08],
            stored_high: [0.80, 0.97],
            monochrome1: 0.0,
            window: 0.75,
            jpeg_quality: None,
        },
        SourceSpec {
            id: SourceId::COVID19_AR.into(),
            dataset: "COVID-19-AR".into(),
            folder: "COVID-19-AR".into(),
            paper_class: Label::Covid,
            file_format: "DICOM CR/DX, 12-bit, WindowCenter/Width, some MONOCHROME1 + clinical CSV".into(),
            aspect: 1.0,
            aspect_jitter: 0.1,
            size_jitter: 0.06,
            square: false,
            zoom: [1.05, 1.18],
            shift_y: [0.02, 0.07],
            gamma: [1.15, 1.35],
            black: [0.10, 0.18],
            white: [0.80, 0.90],
            s_curve: 0.3,
            blur: [2.4, 3.0],
            noise: [0.008, 0.012],
            grain: 0.0,
            grid: Some(GridSpec {
                period: 9.0,
                amplitude: 0.035,
                vertical: false,
            }),
            collimation: CollimationSpec {
                probability: 0.5,
                max_width: [0.04, 0.08, 0.08, 0.08],
                value: 0.02,
            },
            text: Some(TextSpec {
                text: "AP PORTABLE".into(),
                corner: Corner::TopRight,
                height: 0.025,
                value: 1.0,
            }),
            marker: Some(('L', 0.06, 1.0)),
            age: [58.0, 15.0, 19.0, 91.0],
            bits_stored: 12,
            stored_low: [0.0, 0.05],
            stored_high: [0.85, 1.0],
            monochrome1: 0.35,
            window: 1.0,
            jpeg_quality: None,
        },
        SourceSpec {
            id: SourceId::V2_COV19_NII.into(),
            dataset: "V2-COV19-NII".into(),
            folder: "V2-COV19-NII".into(),
            paper_class: Label::Covid,
            file_format: "NIfTI-1 .nii.gz, uint16 raw grey values, x = column + data.csv".into(),
            aspect: 1.18,
            aspect_jitter: 0.06,
            size_jitter: 0.05,
            square: false,
            zoom: [0.90, 1.0],
            shift_y: [-0.03, 0.01],
            gamma: [0.95, 1.05],
            black: [0.0, 0.04],
            white: [0.92, 1.0],
            s_curve: 0.0,
            blur: [0.5, 0.8],
            noise: [0.025, 0.035],
            grain: 2.0,
            grid: Some(GridSpec {
                period: 10.5,
                amplitude: 0.04,
                vertical: true,
            }),
            collimation: CollimationSpec {
                probability: 0.3,
                max_width: [0.03, 0.03, 0.05, 0.05],
                value: 0.9,
            },
            text: Some(TextSpec {
                text: "LIEGEND".into(),
                corner: Corner::BottomLeft,
                height: 0.022,
                value: 0.95,
            }),
            marker: None,
            age: [62.0, 14.0, 22.0, 90.0],
            bits_stored: 16,
            stored_low: [0.01, 0.03],
            stored_high: [0.45, 0.65],
            monochrome1: 0.0,
            window: 0.0,
            jpeg_quality: None,
        },
        SourceSpec {
            id: SourceId::NIH.into(),
            dataset: "NIH ChestX-ray14".into(),
            folder: "ChestX-ray14".into(),
            paper_class: Label::Pneumonia,
            file_format: "8-bit PNG + Data_Entry_2017.csv".into(),
            aspect: 1.0,
            aspect_jitter: 0.0,
            size_jitter: 0.0,
            square: true,
            zoom: [0.88, 0.98],
            shift_y: [-0.02, 0.02],
            gamma: [0.85, 0.95],
            black: [0.0, 0.05],
            white: [0.95, 1.0],
            s_curve: 0.6,
            blur: [2.8, 3.6],
            noise: [0.008, 0.012],
            grain: 1.5,
            grid: None,
            collimation: CollimationSpec {
                probability: 0.4,
                max_width: [0.0, 0.0, 0.08, 0.08],
                value: 0.0,
            },
            text: None,
            marker: Some(('R', 0.035, 0.9)),
            age: [47.0, 17.0, 12.0, 88.0],
            bits_stored: 8,
            stored_low: [0.0, 0.0],
            stored_high: [1.0, 1.0],
            monochrome1: 0.0,
            window: 0.0,
            jpeg_quality: None,
        },
        SourceSpec {
            id: SourceId::CHEXPERT.into(),
            dataset: "CheXpert".into(),
            folder: "CheXpert-v1.0-small".into(),
            paper_class: Label::Pneumonia,
            file_format: "8-bit JPEG + train.csv/valid.csv".into(),
            aspect: 0.82,
            aspect_jitter: 0.05,
            size_jitter: 0.04,
            square: false,
            zoom: [1.0, 1.12],
            shift_y: [0.0, 0.05],
            gamma: [1.05, 1.2],
            black: [0.04, 0.10],
            white: [0.85, 0.95],
            s_curve: 0.0,
            blur: [0.6, 0.9],
            noise: [0.020, 0.030],
            grain: 2.0,
            grid: Some(GridSpec {
                period: 13.0,
                amplitude: 0.03,
                vertical: true,
            }),
            collimation: CollimationSpec {
                probability: 0.5,
                max_width: [0.05, 0.03, 0.04, 0.04],
                value: 0.0,
            },
            text: Some(TextSpec {
                text: "PORTABLE".into(),
                corner: Corner::TopLeft,
                height: 0.03,
                value: 1.0,
            }),
            marker: Some(('L', 0.07, 1.0)),
            age: [61.0, 18.0, 18.0, 90.0],
            bits_stored: 8,
            stored_low: [0.0, 0.0],
            stored_high: [1.0, 1.0],
            monochrome1: 0.0,
            window: 0.0,
            jpeg_quality: Some(80),
        },
        SourceSpec {
            id: SourceId::PADCHEST.into(),
            dataset: "PadChest".into(),
            folder: "PadChest".into(),
            paper_class: Label::Pneumonia,
            file_format: "16-bit PNG + CSV with WindowCenter_DICOM/WindowWidth_DICOM/PhotometricInterpretation_DICOM".into(),
            aspect: 0.95,
            aspect_jitter: 0.1,
            size_jitter: 0.1,
            square: false,
            zoom: [0.85, 0.95],
            shift_y: [-0.04, 0.0],
            gamma: [0.60, 0.75],
            black: [0.12, 0.2],
            white: [0.92, 1.0],
            s_curve: 0.0,
            blur: [2.4, 3.0],
            noise: [0.020, 0.028],
            grain: 2.0,
            grid: None,
            collimation: CollimationSpec {
                probability: 0.9,
                max_width: [0.08, 0.08, 0.08, 0.08],
                value: 1.0,
            },
            text: None,
            marker: Some(('D', 0.045, 1.0)),
            age: [71.0, 13.0, 20.0, 100.0],
            bits_stored: 12,
            stored_low: [0.0, 0.1],
            stored_high: [0.75, 1.0],
            monochrome1: 0.2,
            window: 0.85,
            jpeg_quality: None,
        },
    ]
}

/// The broad, source-free acquisition used for the lung-mask training set: every knob spans the union of the
/// six sources' ranges, so a segmenter trained on it is not tied to one source.
pub fn generic_source() -> SourceSpec {
    SourceSpec {
        id: "lung-masks".into(),
        dataset: "lung-masks".into(),
        folder: "lung-masks".into(),
        paper_class: Label::Normal,
        file_format: "8-bit PNG images + {0,255} PNG masks".into(),
        aspect: 0.95,
        aspect_jitter: 0.2,
        size_jitter: 0.1,
        square: false,
        zoom: [0.85, 1.18],
        shift_y: [-0.04, 0.07],
        gamma: [0.6, 1.35],
        black: [0.0, 0.2],
        white: [0.8, 1.0],
        s_curve: 0.3,
        blur: [0.5, 3.6],
        noise: [0.004, 0.035],
        grain: 1.0,
        grid: None,
        collimation: CollimationSpec {
            probability: 0.5,
            max_width: [0.06, 0.06, 0.06, 0.06],
            value: 0.5,
        },
        text: None,
        marker: Some(('R', 0.05, 1.0)),
        age: [55.0, 18.0, 12.0, 95.0],
        bits_stored: 8,
        stored_low: [0.0, 0.0],
        stored_high: [1.0, 1.0],
        monochrome1: 0.0,
        window: 0.0,
        jpeg_quality: None,
    }
}
