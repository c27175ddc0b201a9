//! The one image → model-input conversion every scorer uses, so that our classifiers and foreign (ONNX)
//! models see the same pixels for the same image (the [`crate::Scorer`] contract).
//!
//! Resize: `image`'s `resize` with the `Triangle` filter (separable bilinear whose support widens with the
//! scale factor when shrinking, i.e. anti-aliased), computed in f32 and rounded back to 8 bits, straight to
//! `size` x `size` (the aspect ratio is not kept: the models were trained on squashed images). An image
//! already `size` square is passed unchanged. Normalisation: `(x / 255 - mean[c]) / std[c]` per channel,
//! the grey plane replicated to every channel, channel-major (CHW).

use std::borrow::Cow;

use crate::Grey8;

/// torchvision's ImageNet statistics, what our backbones were pretrained with.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The 8-bit `size` x `size` plane a model sees: `data` (row-major `width` x `height`) resized as the module
/// doc says, or borrowed unchanged when already that size. `None` when `data` is shorter than
/// `width * height` (bytes past it are ignored, as `image`'s buffers do).
pub fn resize_square(width: u32, height: u32, data: &[u8], size: usize) -> Option<Cow<'_, [u8]>> {
    let s = size as u32;
    let data = data.get(..width as usize * height as usize)?;
    if width == s && height == s {
        return Some(Cow::Borrowed(data));
    }
    let view = ::image::ImageBuffer::<::image::Luma<u8>, &[u8]>::from_raw(width, height, data)?;
    let out = ::image::imageops::resize(&view, s, s, ::image::imageops::FilterType::Triangle);
    Some(Cow::Owned(out.into_raw()))
}

/// Appends one image's model input (`mean.len()` channels x `size` x `size`, CHW) to `out`.
/// `mean` and `std` have one entry per channel. `None` when the buffer does not match its dimensions.
pub fn push_model_input(
    img: &Grey8,
    size: usize,
    mean: &[f32],
    std: &[f32],
    out: &mut Vec<f32>,
) -> Option<()> {
    let plane = resize_square(img.width, img.height, &img.data, size)?;
    push_normalised(&plane, mean, std, out);
    Some(())
}

/// Appends the normalised channels of one already-resized 8-bit plane to `out`.
pub fn push_normalised(plane: &[u8], mean: &[f32], std: &[f32], out: &mut Vec<f32>) {
    out.reserve(plane.len() * mean.len());
    for (&m, &sd) in mean.iter().zip(std) {
        out.extend(plane.iter().map(|&p| (p as f32 / 255.0 - m) / sd));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_passed_unchanged_and_other_sizes_are_resized() {
        let data: Vec<u8> = (0..16u8).map(|i| i * 16).collect();
        assert!(matches!(
            resize_square(4, 4, &data, 4),
            Some(Cow::Borrowed(_))
        ));
        let r = resize_square(4, 4, &data, 2).unwrap();
        assert_eq!(r.len(), 4);
        // Anti-aliased shrink of a horizontal ramp keeps it increasing left to right.
        assert!(r[1] > r[0] && r[3] > r[2]);
        assert!(resize_square(4, 4, &data[..15], 4).is_none());
        assert!(resize_square(3, 3, &data, 2).is_some());
    }

    #[test]
    fn normalisation_is_per_channel_and_channel_major() {
        let img = Grey8::new(2, 1, vec![0, 255]).unwrap();
        let mut out = Vec::new();
        push_model_input(&img, 2, &[0.5, 0.0], &[0.5, 1.0], &mut out).unwrap();
        // 2x1 is not 2x2: resized to 2x2 first, so 8 values; rows of a 1-row image repeat.
        assert_eq!(out.len(), 8);
        assert!(
            (out[0] + 1.0).abs() < 0.05 && (out[4] - 0.0).abs() < 0.05,
            "{out:?}"
        );
    }
}
