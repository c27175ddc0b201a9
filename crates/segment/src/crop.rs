//! The paper's lung-box crop and rejection rules (PAPER.md, pre-processing step 3).
//!
//! The bounding box of the (full-size) mask is enlarged by 5% of its own width and height on each side and
//! clamped to the image. An image is rejected when its mask is empty, or when the crop is no more than half
//! the image's height or width (the authors' code: `crop_h <= h/2 or crop_w <= w/2`) — a mask that small is
//! not a pair of lungs.

use cxr_core::Grey8;

/// Fraction of the box's width (height) added on the left and right (top and bottom).
pub const MARGIN: f64 = 0.05;

/// A rectangle in pixel coordinates: left, top, width, height.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// Why an image was rejected (written to the manifest's `reject_reason` and `rejects.csv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// No foreground pixel in the mask.
    EmptyMask,
    /// The enlarged box is no more than half the image's width or height.
    SmallCrop,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::EmptyMask => "empty_mask",
            RejectReason::SmallCrop => "small_crop",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of the crop rule for one mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropDecision {
    /// The enlarged, clamped box; `None` for an empty mask. Present (for the record) even when rejected
    /// because it is too small.
    pub crop: Option<CropBox>,
    /// Foreground pixels of the mask.
    pub mask_area: u64,
    pub reject: Option<RejectReason>,
}

/// Applies the crop and rejection rules to a mask (any non-zero pixel is lung).
pub fn lung_box(mask: &Grey8) -> CropDecision {
    let (w, h) = (mask.width as usize, mask.height as usize);
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0usize, 0usize);
    let mut area = 0u64;
    for (i, &v) in mask.data.iter().enumerate() {
        if v != 0 {
            let (x, y) = (i % w, i / w);
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
            area += 1;
        }
    }
    if area == 0 {
        return CropDecision {
            crop: None,
            mask_area: 0,
            reject: Some(RejectReason::EmptyMask),
        };
    }
    let (bw, bh) = ((x1 - x0 + 1) as f64, (y1 - y0 + 1) as f64);
    let (mx, my) = (
        (MARGIN * bw).round() as usize,
        (MARGIN * bh).round() as usize,
    );
    let left = x0.saturating_sub(mx);
    let top = y0.saturating_sub(my);
    let right = (x1 + mx).min(w - 1);
    let bottom = (y1 + my).min(h - 1);
    let b = CropBox {
        x: left as u32,
        y: top as u32,
        w: (right - left + 1) as u32,
        h: (bottom - top + 1) as u32,
    };
    let small = 2 * b.w as usize <= w || 2 * b.h as usize <= h;
    CropDecision {
        crop: Some(b),
        mask_area: area,
        reject: small.then_some(RejectReason::SmallCrop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(w: u32, h: u32, rects: &[(u32, u32, u32, u32)]) -> Grey8 {
        let mut data = vec![0u8; (w * h) as usize];
        for &(x, y, rw, rh) in rects {
            for yy in y..y + rh {
                for xx in x..x + rw {
                    data[(yy * w + xx) as usize] = 255;
                }
            }
        }
        Grey8::new(w, h, data).unwrap()
    }

    #[test]
    fn empty_mask_is_rejected() {
        let d = lung_box(&mask(64, 64, &[]));
        assert_eq!(d.reject, Some(RejectReason::EmptyMask));
        assert_eq!((d.crop, d.mask_area), (None, 0));
    }

    #[test]
    fn two_lungs_get_a_five_percent_margin() {
        // Lungs at x 20..60 and 80..120 (box width 100), y 30..130 (box height 100) in a 200x160 image.
        let d = lung_box(&mask(200, 160, &[(20, 30, 40, 100), (80, 30, 40, 100)]));
        assert_eq!(d.reject, None);
        assert_eq!(d.mask_area, 8000);
        assert_eq!(
            d.crop,
            Some(CropBox {
                x: 15,
                y: 25,
                w: 110,
                h: 110
            })
        );
    }

    #[test]
    fn tiny_mask_is_rejected_as_small() {
        let d = lung_box(&mask(100, 100, &[(40, 40, 5, 5)]));
        assert_eq!(d.reject, Some(RejectReason::SmallCrop));
        assert_eq!(d.mask_area, 25);
        assert!(d.crop.is_some());
    }

    #[test]
    fn box_touching_the_border_is_clamped() {
        // Foreground from the left/top edge to the right/bottom edge: the margin cannot leave the image.
        let d = lung_box(&mask(80, 60, &[(0, 0, 30, 60), (50, 10, 30, 40)]));
        assert_eq!(d.reject, None);
        assert_eq!(
            d.crop,
            Some(CropBox {
                x: 0,
                y: 0,
                w: 80,
                h: 60
            })
        );
        let d = lung_box(&mask(100, 100, &[(70, 5, 30, 90)]));
        let c = d.crop.unwrap();
        assert_eq!(c.x + c.w, 100);
        assert!(c.y + c.h <= 100);
    }

    #[test]
    fn one_lung_only_is_rejected_when_no_wider_than_half() {
        // One lung 40 px wide in a 100 px image: 40 + 2*2 = 44 <= 50 → rejected although tall.
        let d = lung_box(&mask(100, 100, &[(10, 10, 40, 80)]));
        assert_eq!(d.reject, Some(RejectReason::SmallCrop));
        assert_eq!(d.crop.unwrap().w, 44);
        // A wide single lung (48 px → 48 + 2*2 = 52 > 50) is kept: the rule is about size, not count.
        let d = lung_box(&mask(100, 100, &[(10, 10, 48, 80)]));
        assert_eq!(d.reject, None);
        // Exactly half is rejected ("no more than half"): a 50 px crop from a 46 px box (margin 2).
        let d = lung_box(&mask(100, 100, &[(10, 10, 46, 80)]));
        assert_eq!(d.crop.unwrap().w, 50);
        assert_eq!(d.reject, Some(RejectReason::SmallCrop));
    }
}
