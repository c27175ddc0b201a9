//! The chest-like 224 px geometry the audit tests' worlds and the committed ONNX cue readers
//! (`crates/onnx/scripts/make_fixtures.py`) share: two elliptical lungs and their mask.

use std::path::Path;

/// The lungs: ellipses centred at row 112, columns 64 and 160, radii 70 x 40.
pub fn in_lung(r: u32, c: u32) -> bool {
    let e = |cc: f64| {
        let (dy, dx) = ((r as f64 - 112.0) / 70.0, (c as f64 - cc) / 40.0);
        dy * dy + dx * dx <= 1.0
    };
    e(64.0) || e(160.0)
}

/// Writes the lung mask of that geometry as `dir/mask.png` (every image of a world shares it).
pub fn write_lung_mask(dir: &Path) {
    let mask: Vec<u8> = (0..224 * 224u32)
        .map(|k| if in_lung(k / 224, k % 224) { 255 } else { 0 })
        .collect();
    image::GrayImage::from_raw(224, 224, mask)
        .unwrap()
        .save(dir.join("mask.png"))
        .unwrap();
}

/// Writes a 224 px grey image as `dir/im{i}.png` and returns its file name.
pub fn save_image(dir: &Path, i: impl std::fmt::Display, px: Vec<u8>) -> String {
    let name = format!("im{i}.png");
    image::GrayImage::from_raw(224, 224, px)
        .unwrap()
        .save(dir.join(&name))
        .unwrap();
    name
}
