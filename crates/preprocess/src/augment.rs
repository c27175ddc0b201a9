//! The paper's 10x augmentation (section "Pre-processing", step 5): the original, its horizontal flip, and
//! each of the two rotated by +2, +4, -2 and -4 degrees.
//!
//! Rotation is about the image centre, same output size, bilinear interpolation; positive angles turn the
//! image counter-clockwise as displayed (PIL's and Keras' convention). **Border fill:** pixels whose source
//! falls outside the image take the nearest edge pixel (edge replication, Keras `fill_mode="nearest"`, its
//! default), so rotation adds no black corners that a network could learn as a marker of augmented images.

use cxr_core::Grey8;

/// One augmented variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AugKind {
    pub flip: bool,
    /// Degrees, counter-clockwise; 0 = none.
    pub degrees: i32,
}

/// The ten variants in the order of the manifest's `aug<k>` ids: `orig, flip, rot+2, rot+4, rot-2, rot-4,
/// flip+rot+2, flip+rot+4, flip+rot-2, flip+rot-4`.
pub const AUGMENTATIONS: [AugKind; 10] = [
    AugKind {
        flip: false,
        degrees: 0,
    },
    AugKind {
        flip: true,
        degrees: 0,
    },
    AugKind {
        flip: false,
        degrees: 2,
    },
    AugKind {
        flip: false,
        degrees: 4,
    },
    AugKind {
        flip: false,
        degrees: -2,
    },
    AugKind {
        flip: false,
        degrees: -4,
    },
    AugKind {
        flip: true,
        degrees: 2,
    },
    AugKind {
        flip: true,
        degrees: 4,
    },
    AugKind {
        flip: true,
        degrees: -2,
    },
    AugKind {
        flip: true,
        degrees: -4,
    },
];

impl AugKind {
    /// The manifest's `aug` value (`orig`, `flip`, `rot+2`, `flip+rot-4`, ...).
    pub fn name(self) -> String {
        match (self.flip, self.degrees) {
            (false, 0) => "orig".into(),
            (true, 0) => "flip".into(),
            (false, d) => format!("rot{d:+}"),
            (true, d) => format!("flip+rot{d:+}"),
        }
    }

    pub fn apply(self, img: &Grey8) -> Grey8 {
        let base = if self.flip {
            flip_horizontal(img)
        } else {
            img.clone()
        };
        if self.degrees == 0 {
            base
        } else {
            rotate(&base, f64::from(self.degrees))
        }
    }
}

/// All ten variants, in [`AUGMENTATIONS`] order.
pub fn augment(img: &Grey8) -> Vec<(AugKind, Grey8)> {
    AUGMENTATIONS.iter().map(|&k| (k, k.apply(img))).collect()
}

pub fn flip_horizontal(img: &Grey8) -> Grey8 {
    let w = img.width as usize;
    let mut data = img.data.clone();
    for row in data.chunks_exact_mut(w) {
        row.reverse();
    }
    Grey8 {
        width: img.width,
        height: img.height,
        data,
    }
}

/// Rotates by `degrees` counter-clockwise about the centre, bilinear, edge-replicated border.
pub fn rotate(img: &Grey8, degrees: f64) -> Grey8 {
    let (w, h) = (img.width as usize, img.height as usize);
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let (s, c) = degrees.to_radians().sin_cos();
    let px = |x: isize, y: isize| -> f64 {
        let x = x.clamp(0, w as isize - 1) as usize;
        let y = y.clamp(0, h as isize - 1) as usize;
        f64::from(img.data[y * w + x])
    };
    let mut data = Vec::with_capacity(w * h);
    for y in 0..h {
        let dy = y as f64 - cy;
        for x in 0..w {
            let dx = x as f64 - cx;
            // Inverse map (y points down): the output pixel at angle +θ came from the input turned by -θ.
            let sx = cx + dx * c - dy * s;
            let sy = cy + dx * s + dy * c;
            let sx = sx.clamp(0.0, w as f64 - 1.0);
            let sy = sy.clamp(0.0, h as f64 - 1.0);
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as isize, y0 as isize);
            let top = px(x0, y0) * (1.0 - fx) + px(x0 + 1, y0) * fx;
            let bottom = px(x0, y0 + 1) * (1.0 - fx) + px(x0 + 1, y0 + 1) * fx;
            let v = top * (1.0 - fy) + bottom * fy;
            data.push(v.round().clamp(0.0, 255.0) as u8);
        }
    }
    Grey8 {
        width: img.width,
        height: img.height,
        data,
    }
}
