//! The pipeline's one 8-bit grey image file: reading and writing the PNGs stages hand each other (`png8`,
//! `mask`, `crop` columns, occlusion images, synthetic 8-bit sources, lung masks).
//!
//! Reading takes whatever a user or a dataset puts there, by content, never by extension (the Cohen collection
//! stores PNG bytes under `.jpg` names): PNG or JPEG, grey, grey + alpha, RGB(A), palette, 8 or 16 bits, all
//! converted to 8-bit grey with the `image` crate's conversions (its luma weights for colour, `/ 257` for 16-bit,
//! alpha dropped). Writing is always an 8-bit grey PNG with fast compression and adaptive filtering
//! (the `image` crate's defaults: these files are written once per image and read a few times), atomically.
//!
//! Decoding a dataset's own formats (DICOM, NIfTI, 16-bit PNGs with their windows) is ingest's job, not this:
//! the conversion here loses the stored values a display pipeline needs.

use std::io::Cursor;
use std::path::Path;

use image::ImageEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};

use crate::{CoreError, Grey8};

/// Reads a PNG or JPEG file (format from its bytes) as 8-bit grey. Errors name the file.
pub fn read_grey8(path: &Path) -> Result<Grey8, CoreError> {
    let bytes = std::fs::read(path).map_err(|e| CoreError::io(path, e))?;
    decode_grey8(&bytes, path)
}

/// Decodes PNG or JPEG bytes (format from the bytes) as 8-bit grey; `path` only names them in an error.
pub fn decode_grey8(bytes: &[u8], path: &Path) -> Result<Grey8, CoreError> {
    let err = |message: String| CoreError::Image {
        path: path.to_path_buf(),
        message,
    };
    let img = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?
        .decode()
        .map_err(|e| err(format!("cannot decode image: {e}")))?
        .into_luma8();
    let (w, h) = img.dimensions();
    Grey8::new(w, h, img.into_raw()).map_err(|e| err(e.to_string()))
}

/// PNG bytes of an 8-bit grey image; `path` only names the file in an error.
pub fn encode_grey8(img: &Grey8, path: &Path) -> Result<Vec<u8>, CoreError> {
    encode_grey8_with(img, path, CompressionType::Fast)
}

/// [`encode_grey8`] with maximum compression, for files kept and shipped rather than handed to the next
/// stage (galleries).
pub fn encode_grey8_small(img: &Grey8, path: &Path) -> Result<Vec<u8>, CoreError> {
    encode_grey8_with(img, path, CompressionType::Best)
}

fn encode_grey8_with(
    img: &Grey8,
    path: &Path,
    compression: CompressionType,
) -> Result<Vec<u8>, CoreError> {
    let mut out = Vec::with_capacity(img.data.len() / 2 + 1024);
    PngEncoder::new_with_quality(&mut out, compression, FilterType::Adaptive)
        .write_image(
            &img.data,
            img.width,
            img.height,
            image::ExtendedColorType::L8,
        )
        .map_err(|e| CoreError::Image {
            path: path.to_path_buf(),
            message: format!("encoding an 8-bit PNG: {e}"),
        })?;
    Ok(out)
}

/// Writes an 8-bit grey PNG atomically ([`crate::fsutil::write_atomic`]: temporary file, fsync, rename).
pub fn write_grey8(path: &Path, img: &Grey8) -> Result<(), CoreError> {
    crate::fsutil::write_atomic(path, &encode_grey8(img, path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgb, RgbImage};

    #[test]
    fn round_trip_and_format_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let img = Grey8::new(3, 2, vec![0, 10, 20, 30, 40, 255]).unwrap();
        // A `.jpg` name holding PNG bytes, as in the Cohen collection.
        let p = dir.path().join("x.jpg");
        write_grey8(&p, &img).unwrap();
        assert_eq!(read_grey8(&p).unwrap(), img);
        // The bytes are those of the `image` crate's default PNG encoder (what every copy wrote before).
        let mut default = Vec::new();
        PngEncoder::new(&mut default)
            .write_image(&img.data, 3, 2, image::ExtendedColorType::L8)
            .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), default);
    }

    #[test]
    fn colour_and_16_bit_inputs_become_grey() {
        let dir = tempfile::tempdir().unwrap();
        let rgb = dir.path().join("rgb.png");
        RgbImage::from_fn(2, 1, |x, _| {
            if x == 0 {
                Rgb([200, 200, 200])
            } else {
                Rgb([255, 0, 0])
            }
        })
        .save(&rgb)
        .unwrap();
        let g = read_grey8(&rgb).unwrap();
        assert_eq!(g.data[0], 200);
        assert!((20..100).contains(&g.data[1]), "red as grey: {}", g.data[1]);
        let p16 = dir.path().join("16.png");
        ImageBuffer::<Luma<u16>, _>::from_raw(2, 1, vec![0u16, 65535])
            .unwrap()
            .save(&p16)
            .unwrap();
        assert_eq!(read_grey8(&p16).unwrap().data, vec![0, 255]);
        // JPEG bytes under a `.png` name.
        let jpg = dir.path().join("grey.png");
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95)
            .encode(&[128u8; 64], 8, 8, image::ExtendedColorType::L8)
            .unwrap();
        std::fs::write(&jpg, bytes).unwrap();
        let j = read_grey8(&jpg).unwrap();
        assert_eq!((j.width, j.height), (8, 8));
        assert!(j.data.iter().all(|&v| v.abs_diff(128) <= 1));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.png");
        std::fs::write(&bad, b"not an image").unwrap();
        assert!(
            read_grey8(&bad)
                .unwrap_err()
                .to_string()
                .contains("bad.png")
        );
        let absent = dir.path().join("absent.png");
        assert!(
            read_grey8(&absent)
                .unwrap_err()
                .to_string()
                .contains("absent.png")
        );
    }
}
