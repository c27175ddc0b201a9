//! One image through the whole stage: display pipeline → resize.

use cxr_core::{Grey8, RawImage};
use serde::{Deserialize, Serialize};

use crate::PixelError;
use crate::display::{Applied, DisplayOptions, MetadataOverride, to_grey8};
use crate::resize::{Filter, ResizeMode, resize, target_size};

/// Output geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    pub size: u32,
    pub resize: ResizeMode,
    pub filter: Filter,
}

/// An image after the stage, with what was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Processed {
    pub image: Grey8,
    pub applied: Applied,
    /// Size of the input (before resizing).
    pub input_size: (u32, u32),
}

/// Displays and resizes one image.
pub fn preprocess(
    img: &RawImage,
    over: &MetadataOverride,
    opts: &DisplayOptions,
    geometry: &Geometry,
) -> Result<Processed, PixelError> {
    let (grey, applied) = to_grey8(img, over, opts)?;
    let (w, h) = target_size(grey.width, grey.height, geometry.resize, geometry.size);
    let image = resize(&grey, w, h, geometry.filter)?;
    Ok(Processed {
        image,
        applied,
        input_size: (img.width, img.height),
    })
}
