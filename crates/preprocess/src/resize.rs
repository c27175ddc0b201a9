//! Resizing 8-bit grey images with `fast_image_resize` (SIMD convolution).
//!
//! The filter is a config choice; the default is [`Filter::Bilinear`] as a *convolution* (it anti-aliases when
//! shrinking, like Pillow's `Image.resize(..., BILINEAR)`, unlike OpenCV's `INTER_LINEAR`), so the Python
//! reference pipeline of the benchmark does the same arithmetic.

use cxr_core::Grey8;
use fast_image_resize as fr;
use serde::{Deserialize, Serialize};

use crate::PixelError;

/// Resampling filter (fast_image_resize convolution filters, plus nearest neighbour).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    Nearest,
    Box,
    #[default]
    Bilinear,
    Hamming,
    Catmullrom,
    Mitchell,
    Lanczos3,
}

impl Filter {
    fn alg(self) -> fr::ResizeAlg {
        use fr::FilterType as F;
        match self {
            Filter::Nearest => fr::ResizeAlg::Nearest,
            Filter::Box => fr::ResizeAlg::Convolution(F::Box),
            Filter::Bilinear => fr::ResizeAlg::Convolution(F::Bilinear),
            Filter::Hamming => fr::ResizeAlg::Convolution(F::Hamming),
            Filter::Catmullrom => fr::ResizeAlg::Convolution(F::CatmullRom),
            Filter::Mitchell => fr::ResizeAlg::Convolution(F::Mitchell),
            Filter::Lanczos3 => fr::ResizeAlg::Convolution(F::Lanczos3),
        }
    }
}

/// Output geometry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Keep the input size.
    Keep,
    /// Scale so the longer side is `size`, keeping the aspect ratio (up or down).
    #[default]
    Longest,
    /// Stretch to `size` x `size` (the paper's 224x224 network input).
    Square,
}

/// The output size for an input of `w` x `h`.
pub fn target_size(w: u32, h: u32, mode: ResizeMode, size: u32) -> (u32, u32) {
    match mode {
        ResizeMode::Keep => (w, h),
        _ if size == 0 => (w, h),
        ResizeMode::Square => (size, size),
        ResizeMode::Longest => {
            let long = w.max(h) as f64;
            let s = size as f64 / long;
            let nw = ((w as f64 * s).round() as u32).max(1);
            let nh = ((h as f64 * s).round() as u32).max(1);
            (nw, nh)
        }
    }
}

/// Resizes to exactly `w` x `h` (a copy when the size is unchanged).
pub fn resize(img: &Grey8, w: u32, h: u32, filter: Filter) -> Result<Grey8, PixelError> {
    if (w, h) == (img.width, img.height) {
        return Ok(img.clone());
    }
    let err = |message: String| PixelError::Resize {
        from_w: img.width,
        from_h: img.height,
        to_w: w,
        to_h: h,
        message,
    };
    if w == 0 || h == 0 {
        return Err(err("zero output size".into()));
    }
    let src = fr::images::ImageRef::new(img.width, img.height, &img.data, fr::PixelType::U8)
        .map_err(|e| err(e.to_string()))?;
    let mut dst = fr::images::Image::new(w, h, fr::PixelType::U8);
    let mut resizer = fr::Resizer::new();
    resizer
        .resize(
            &src,
            &mut dst,
            &fr::ResizeOptions::new().resize_alg(filter.alg()),
        )
        .map_err(|e| err(e.to_string()))?;
    Grey8::new(w, h, dst.into_vec()).map_err(|e| err(e.to_string()))
}
