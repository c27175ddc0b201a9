//! The display pipeline: stored values → 8-bit grey, in the order of DICOM PS3.3 C.11 / PS3.4 N.2:
//! Modality LUT (C.11.1) → VOI LUT or window (C.11.2) → MONOCHROME1 inversion (C.7.6.3.1.2) → 8 bits.
//!
//! Sources without a window (PNG, NIfTI, JPEG) are stretched by min-max (the authors' code) or by a percentile
//! clip. Every choice made is returned in an [`Applied`], which batch mode writes as manifest columns.
//!
//! All linear mappings (LINEAR and LINEAR_EXACT windows, min-max, percentile, nominal range) reduce to
//! `y = clamp((x - lo) * 255 / (hi - lo))` with the standard's boundary rules, evaluated in `f64` and rounded to
//! the nearest grey level; SIGMOID and VOI LUTs have their own loops.

use std::borrow::Cow;

use cxr_core::{Grey8, Lut, Photometric, PixelMeta, RawImage, VoiLutFunction, Window};
use serde::{Deserialize, Serialize};

use crate::PixelError;

/// How the VOI stage is chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowMode {
    /// A window from the metadata override, else the file's VOI LUT / window, else the fallback.
    #[default]
    Auto,
    /// Min-max stretch of the (modality-transformed) values, ignoring any window.
    Minmax,
    /// Percentile clip and stretch, ignoring any window.
    Percentile,
    /// No VOI at all: the full nominal range of the stored bits (after the Modality LUT) maps onto 0..255.
    None,
}

/// What [`WindowMode::Auto`] does when the image has no window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    #[default]
    Minmax,
    Percentile,
}

/// A window (and photometric interpretation) from dataset metadata rather than from the pixel file
/// (PadChest's CSV, BIMCV's sidecars: manifest columns `window_center`, `window_width`, `photometric`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetadataOverride {
    pub window: Option<Window>,
    pub photometric: Option<Photometric>,
}

/// Everything that decides how one image is displayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisplayOptions {
    pub window: WindowMode,
    pub fallback: Fallback,
    /// Lower and upper percentile (0..100) for [`Fallback::Percentile`] / [`WindowMode::Percentile`].
    pub percentile: (f64, f64),
    /// When a file has both a VOI LUT Sequence and windows, use the LUT (pydicom's default and
    /// dicom-pixeldata's; the standard leaves the choice to the application).
    pub prefer_voi_lut: bool,
    /// Which window (or VOI LUT) of the file to use; 0 = the first, the standard's default.
    pub voi_index: usize,
    /// Use [`MetadataOverride`] values when present.
    pub use_metadata: bool,
}

impl Default for DisplayOptions {
    fn default() -> Self {
        Self {
            window: WindowMode::Auto,
            fallback: Fallback::Minmax,
            percentile: (0.5, 99.5),
            prefer_voi_lut: true,
            voi_index: 0,
            use_metadata: true,
        }
    }
}

/// Where the VOI transform came from (manifest column `pre_window_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WindowSource {
    /// Window Center/Width in the pixel file.
    File,
    /// Window from dataset metadata (manifest columns).
    Metadata,
    /// VOI LUT Sequence in the pixel file.
    VoiLut,
    Minmax,
    Percentile,
    /// [`WindowMode::None`]: the nominal range of the stored bits.
    Range,
}

impl WindowSource {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowSource::File => "file",
            WindowSource::Metadata => "metadata",
            WindowSource::VoiLut => "voi-lut",
            WindowSource::Minmax => "minmax",
            WindowSource::Percentile => "percentile",
            WindowSource::Range => "range",
        }
    }
}

/// Which Modality LUT was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModalityApplied {
    Identity,
    Rescale,
    Lut,
    /// The reader had already applied it (NIfTI scl_slope/scl_inter).
    ByReader,
}

/// What the pipeline did to one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub modality: ModalityApplied,
    /// Window centre and width, for window sources.
    pub window: Option<(f64, f64)>,
    pub voi_function: Option<VoiLutFunction>,
    pub source: WindowSource,
    pub inverted: bool,
    /// Input values (after the Modality LUT) mapped onto grey 0 and 255 before inversion: the window edges,
    /// the min/max or percentile values, the VOI LUT's first and last mapped input.
    pub min: f64,
    pub max: f64,
}

impl Applied {
    /// `pre_window` column: `center/width`, empty when no window was used.
    pub fn window_string(&self) -> String {
        self.window
            .map(|(c, w)| format!("{}/{}", fmt_num(c), fmt_num(w)))
            .unwrap_or_default()
    }
}

/// Shortest decimal form that round-trips (`15000`, `0.5`).
pub fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Applies the Modality LUT (C.11.1): the Modality LUT Sequence if present, else rescale slope/intercept.
pub fn modality_values<'a>(
    img: &'a RawImage,
) -> Result<(Cow<'a, [f32]>, ModalityApplied), PixelError> {
    let meta = &img.meta;
    if meta.rescale_applied {
        return Ok((Cow::Borrowed(&img.pixels), ModalityApplied::ByReader));
    }
    if let Some(lut) = &meta.modality_lut {
        check_lut(lut, "Modality")?;
        let out = img
            .pixels
            .iter()
            .map(|&v| f32::from(lut_lookup(lut, v as f64)))
            .collect();
        return Ok((Cow::Owned(out), ModalityApplied::Lut));
    }
    match &meta.rescale {
        Some(r) if !(r.slope == 1.0 && r.intercept == 0.0) => {
            let (s, i) = (r.slope, r.intercept);
            let out = img
                .pixels
                .iter()
                .map(|&v| (f64::from(v) * s + i) as f32)
                .collect();
            Ok((Cow::Owned(out), ModalityApplied::Rescale))
        }
        Some(_) => Ok((Cow::Borrowed(&img.pixels), ModalityApplied::Rescale)),
        None => Ok((Cow::Borrowed(&img.pixels), ModalityApplied::Identity)),
    }
}

fn check_lut(lut: &Lut, which: &'static str) -> Result<(), PixelError> {
    if lut.data.is_empty() || !(8..=16).contains(&lut.bits) {
        return Err(PixelError::BadLut {
            which,
            bits: lut.bits,
        });
    }
    Ok(())
}

/// LUT lookup as PS3.3 C.11.1.1 / C.11.2.1.1: inputs below the first mapped value take the first entry,
/// inputs past the end the last one. Non-integer inputs are rounded (they only arise after a rescale).
fn lut_lookup(lut: &Lut, v: f64) -> u16 {
    let last = lut.data.len() - 1;
    let idx = if v.is_finite() {
        (v.round() - lut.first_mapped as f64).clamp(0.0, last as f64) as usize
    } else {
        0
    };
    lut.data[idx]
}

/// Bits the entries of a VOI LUT actually span. Some devices declare 16 bits for 12-bit data (Agfa CR);
/// taking the declaration literally renders them nearly black. Same rule as dicom-pixeldata 0.10: the
/// declared depth wins when the data exceeds it or is all zero.
pub fn effective_lut_bits(lut: &Lut) -> u16 {
    let max = lut.data.iter().copied().max().unwrap_or(0);
    let used = (u16::BITS - max.leading_zeros()) as u16;
    if used == 0 || used > lut.bits {
        lut.bits
    } else {
        used
    }
}

enum Voi<'a> {
    Window(Window, VoiLutFunction, WindowSource),
    Lut(&'a Lut),
    Minmax,
    Percentile,
    Range,
}

fn choose_voi<'a>(
    meta: &'a PixelMeta,
    over: &MetadataOverride,
    opts: &DisplayOptions,
) -> Result<Voi<'a>, PixelError> {
    match opts.window {
        WindowMode::Minmax => return Ok(Voi::Minmax),
        WindowMode::Percentile => return Ok(Voi::Percentile),
        WindowMode::None => return Ok(Voi::Range),
        WindowMode::Auto => {}
    }
    if opts.use_metadata
        && let Some(w) = &over.window
    {
        // Metadata gives centre and width only: the standard's default function.
        return Ok(Voi::Window(
            w.clone(),
            VoiLutFunction::Linear,
            WindowSource::Metadata,
        ));
    }
    let pick_lut = |i: usize| -> Result<Voi<'a>, PixelError> {
        meta.voi_luts
            .get(i)
            .map(Voi::Lut)
            .ok_or(PixelError::NoSuchVoi {
                what: "VOI LUT",
                index: i,
                available: meta.voi_luts.len(),
            })
    };
    let pick_window = |i: usize| -> Result<Voi<'a>, PixelError> {
        meta.windows
            .get(i)
            .map(|w| Voi::Window(w.clone(), meta.voi_lut_function, WindowSource::File))
            .ok_or(PixelError::NoSuchVoi {
                what: "window",
                index: i,
                available: meta.windows.len(),
            })
    };
    let (has_lut, has_win) = (!meta.voi_luts.is_empty(), !meta.windows.is_empty());
    match (has_lut, has_win) {
        (true, true) if opts.prefer_voi_lut => pick_lut(opts.voi_index),
        (_, true) => pick_window(opts.voi_index),
        (true, false) => pick_lut(opts.voi_index),
        (false, false) => Ok(match opts.fallback {
            Fallback::Minmax => Voi::Minmax,
            Fallback::Percentile => Voi::Percentile,
        }),
    }
}

/// Stored values → 8-bit grey at the input size, with a record of what was done.
pub fn to_grey8(
    img: &RawImage,
    over: &MetadataOverride,
    opts: &DisplayOptions,
) -> Result<(Grey8, Applied), PixelError> {
    if img.pixels.len() != img.width as usize * img.height as usize || img.pixels.is_empty() {
        return Err(PixelError::Buffer(format!(
            "{}x{} with {} values",
            img.width,
            img.height,
            img.pixels.len()
        )));
    }
    let meta = &img.meta;
    let (values, modality) = modality_values(img)?;
    let photometric = if opts.use_metadata {
        over.photometric.unwrap_or(meta.photometric)
    } else {
        meta.photometric
    };
    let inverted = photometric == Photometric::Monochrome1;
    let voi = choose_voi(meta, over, opts)?;

    let (mut data, applied) = match voi {
        Voi::Window(w, function, source) => {
            let (c, width) = (w.center, w.width);
            let bad = |reason| PixelError::InvalidWindow {
                center: c,
                width,
                function: function_name(function),
                reason,
            };
            if !c.is_finite() || !width.is_finite() || width <= 0.0 {
                return Err(bad("width must be finite and > 0"));
            }
            // LINEAR needs w >= 1 (C.11.2.1.2.1: it is defined in terms of w - 1). A narrower window only arises
            // when a rescale maps onto a small float range; LINEAR_EXACT is then the faithful reading (the
            // same choice as dicom-pixeldata).
            let function = match function {
                VoiLutFunction::Linear if width < 1.0 => VoiLutFunction::LinearExact,
                f => f,
            };
            let (data, lo, hi) = match function {
                VoiLutFunction::Linear => {
                    // C.11.2.1.2.1: x <= c - 0.5 - (w-1)/2 → ymin; x > c - 0.5 + (w-1)/2 → ymax;
                    // else ((x - (c - 0.5)) / (w-1) + 0.5) * (ymax - ymin) + ymin, i.e. (x - lo) * 255/(w-1).
                    let lo = c - 0.5 - (width - 1.0) / 2.0;
                    let hi = c - 0.5 + (width - 1.0) / 2.0;
                    let data = if width == 1.0 {
                        threshold(&values, lo)
                    } else {
                        affine(&values, lo, hi, 255.0 / (width - 1.0))
                    };
                    (data, lo, hi)
                }
                VoiLutFunction::LinearExact => {
                    // C.11.2.1.3.2: x <= c - w/2 → ymin; x > c + w/2 → ymax; else ((x - c)/w + 0.5) * 255.
                    let lo = c - width / 2.0;
                    let hi = c + width / 2.0;
                    (affine(&values, lo, hi, 255.0 / width), lo, hi)
                }
                VoiLutFunction::Sigmoid => {
                    // C.11.2.1.3.1: y = (ymax - ymin) / (1 + exp(-4 (x - c) / w)) + ymin.
                    let data = values
                        .iter()
                        .map(|&x| {
                            let x = f64::from(x);
                            if !x.is_finite() {
                                return 0;
                            }
                            to_u8(255.0 / (1.0 + (-4.0 * (x - c) / width).exp()))
                        })
                        .collect();
                    (data, c - width / 2.0, c + width / 2.0)
                }
            };
            (
                data,
                Applied {
                    modality,
                    window: Some((c, width)),
                    voi_function: Some(function),
                    source,
                    inverted,
                    min: lo,
                    max: hi,
                },
            )
        }
        Voi::Lut(lut) => {
            check_lut(lut, "VOI")?;
            let ymax = f64::from((1u32 << effective_lut_bits(lut)) - 1);
            // One lookup per LUT entry, not per pixel: entries → 8 bits once.
            let table: Vec<u8> = lut
                .data
                .iter()
                .map(|&e| to_u8(f64::from(e) * 255.0 / ymax))
                .collect();
            let last = table.len() - 1;
            let first = lut.first_mapped as f64;
            let data = values
                .iter()
                .map(|&x| {
                    let x = f64::from(x);
                    let i = if x.is_finite() {
                        (x.round() - first).clamp(0.0, last as f64) as usize
                    } else {
                        0
                    };
                    table[i]
                })
                .collect();
            (
                data,
                Applied {
                    modality,
                    window: None,
                    voi_function: None,
                    source: WindowSource::VoiLut,
                    inverted,
                    min: first,
                    max: first + last as f64,
                },
            )
        }
        Voi::Minmax | Voi::Percentile | Voi::Range => {
            let (lo, hi, source) = match voi {
                Voi::Minmax => {
                    let (lo, hi) = finite_min_max(&values).ok_or(PixelError::NoFiniteValue)?;
                    (lo, hi, WindowSource::Minmax)
                }
                Voi::Percentile => {
                    let (plo, phi) = opts.percentile;
                    if !((0.0..100.0).contains(&plo) && plo < phi && phi <= 100.0) {
                        return Err(PixelError::BadPercentile { lo: plo, hi: phi });
                    }
                    let (lo, hi) =
                        percentiles(&values, plo, phi).ok_or(PixelError::NoFiniteValue)?;
                    (lo, hi, WindowSource::Percentile)
                }
                _ => match nominal_range(meta) {
                    Some((lo, hi)) => (lo, hi, WindowSource::Range),
                    None => {
                        let (lo, hi) = finite_min_max(&values).ok_or(PixelError::NoFiniteValue)?;
                        (lo, hi, WindowSource::Minmax)
                    }
                },
            };
            let data = if hi > lo {
                affine_inclusive(&values, lo, hi)
            } else {
                // A constant image: nothing to stretch.
                tracing::debug!("constant image: every value is {lo}");
                vec![0u8; values.len()]
            };
            (
                data,
                Applied {
                    modality,
                    window: None,
                    voi_function: None,
                    source,
                    inverted,
                    min: lo,
                    max: hi,
                },
            )
        }
    };
    if inverted {
        for v in &mut data {
            *v = 255 - *v;
        }
    }
    let grey =
        Grey8::new(img.width, img.height, data).map_err(|e| PixelError::Buffer(e.to_string()))?;
    Ok((grey, applied))
}

fn function_name(f: VoiLutFunction) -> &'static str {
    match f {
        VoiLutFunction::Linear => "LINEAR",
        VoiLutFunction::LinearExact => "LINEAR_EXACT",
        VoiLutFunction::Sigmoid => "SIGMOID",
    }
}

/// Nearest grey level, halves rounded up (= `f64::round` on 0..255). `+ 0.5` and a truncating cast instead of
/// `round()`, which is a libm call per pixel without SSE4.1 in the target features.
#[inline]
fn to_u8(y: f64) -> u8 {
    (y.clamp(0.0, 255.0) + 0.5) as u8
}

/// `x <= lo → 0`, `x > hi → 255`, else `round((x - lo) * scale)` (the window rules of C.11.2.1.2).
fn affine(values: &[f32], lo: f64, hi: f64, scale: f64) -> Vec<u8> {
    values
        .iter()
        .map(|&x| {
            let x = f64::from(x);
            if x.is_nan() || x <= lo {
                0
            } else if x > hi {
                255
            } else {
                to_u8((x - lo) * scale)
            }
        })
        .collect()
}

/// A window of width 1: a hard threshold.
fn threshold(values: &[f32], lo: f64) -> Vec<u8> {
    values
        .iter()
        .map(|&x| if f64::from(x) > lo { 255 } else { 0 })
        .collect()
}

/// Min-max style stretch: `round((clamp(x, lo, hi) - lo) * 255 / (hi - lo))`.
fn affine_inclusive(values: &[f32], lo: f64, hi: f64) -> Vec<u8> {
    let scale = 255.0 / (hi - lo);
    values
        .iter()
        .map(|&x| {
            let x = f64::from(x);
            if x.is_nan() {
                0
            } else {
                to_u8((x.clamp(lo, hi) - lo) * scale)
            }
        })
        .collect()
}

fn finite_min_max(values: &[f32]) -> Option<(f64, f64)> {
    let mut lo = f32::INFINITY;
    let mut hi = f32::NEG_INFINITY;
    for &v in values {
        if v.is_finite() {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    (lo <= hi).then_some((f64::from(lo), f64::from(hi)))
}

/// Percentiles with numpy's default (linear interpolation between the order statistics at
/// `p/100 * (n - 1)`), over finite values.
pub fn percentiles(values: &[f32], lo: f64, hi: f64) -> Option<(f64, f64)> {
    let mut v: Vec<f32> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let a = percentile_in_place(&mut v, lo);
    let b = percentile_in_place(&mut v, hi);
    Some((a, b))
}

fn percentile_in_place(v: &mut [f32], p: f64) -> f64 {
    let n = v.len();
    let rank = p / 100.0 * (n - 1) as f64;
    let k = rank.floor() as usize;
    let frac = rank - k as f64;
    let (_, kth, rest) = v.select_nth_unstable_by(k, f32::total_cmp);
    let a = f64::from(*kth);
    if frac == 0.0 || rest.is_empty() {
        return a;
    }
    let b = rest.iter().copied().fold(f32::INFINITY, f32::min);
    a + (f64::from(b) - a) * frac
}

/// The values the stored bits can hold, after the Modality LUT; `None` when the bit depth is unknown.
fn nominal_range(meta: &PixelMeta) -> Option<(f64, f64)> {
    let bits = meta.bits_stored;
    if bits == 0 || bits > 32 {
        return None;
    }
    let (lo, hi) = if meta.signed {
        (
            -(2f64.powi(i32::from(bits) - 1)),
            2f64.powi(i32::from(bits) - 1) - 1.0,
        )
    } else {
        (0.0, 2f64.powi(i32::from(bits)) - 1.0)
    };
    if meta.rescale_applied {
        return None;
    }
    if let Some(lut) = &meta.modality_lut {
        let lo = lut.data.iter().copied().min()?;
        let hi = lut.data.iter().copied().max()?;
        return Some((f64::from(lo), f64::from(hi)));
    }
    match &meta.rescale {
        Some(r) => {
            let (a, b) = (lo * r.slope + r.intercept, hi * r.slope + r.intercept);
            Some((a.min(b), a.max(b)))
        }
        None => Some((lo, hi)),
    }
}
