//! Images in the report: previews embedded as data URIs, each linking to the full file beside the report.

use std::path::Path;

use crate::error::{Context as _, Result, StudyError};
use crate::report::Block;

/// Inline previews are this wide (pixels); the full galleries are linked.
pub const THUMB_WIDTH: u32 = 200;

/// A gallery as an inline thumbnail linking to the full file, which stays where the stage wrote it (inside
/// the output folder, so the link is relative and survives moving the folder); a file elsewhere is copied
/// into `galleries/` beside the report first.
pub fn thumbnail(caption: &str, file: &Path, out: &Path) -> Result<Block> {
    let bytes = cxr_explain::render::thumbnail_png(file, THUMB_WIDTH)
        .ctx(|| format!("making a thumbnail of {}", file.display()))?;
    linked(caption, file, out, bytes)
}

/// A JPEG preview at most `width` pixels wide: a grey radiograph with its noise costs ~120 kB as a 240-px
/// PNG and ~20 kB as a JPEG, and twelve of them must fit the report's 3 MiB beside the Grad-CAM galleries.
pub fn jpeg_preview(file: &Path, width: u32) -> Result<Vec<u8>> {
    let img = image::open(file)
        .ctx(|| format!("reading {}", file.display()))?
        .to_rgb8();
    let small = if img.width() > width {
        let h = ((img.height() as f64 * width as f64 / img.width() as f64).round() as u32).max(1);
        image::imageops::resize(&img, width, h, image::imageops::FilterType::Triangle)
    } else {
        img
    };
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85)
        .encode_image(&small)
        .ctx(|| format!("encoding a preview of {}", file.display()))?;
    Ok(bytes)
}

/// A preview (`bytes`) linking to `file`, as [`thumbnail`] describes.
pub fn linked(caption: &str, file: &Path, out: &Path, bytes: Vec<u8>) -> Result<Block> {
    let href = match file.strip_prefix(out) {
        Ok(rel) => rel.to_path_buf(),
        Err(_) => {
            let name = file.file_name().unwrap_or_default();
            let rel = Path::new("galleries").join(name);
            let copy = std::fs::read(file).map_err(|e| StudyError::io(file, e))?;
            cxr_core::fsutil::write_atomic(&out.join(&rel), &copy)
                .ctx(|| format!("copying {} beside the report", file.display()))?;
            rel
        }
    };
    Ok(Block::Thumbnail {
        caption: caption.to_string(),
        bytes,
        // URLs use `/` on every platform.
        href: href
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_outside_the_report_folder_is_copied_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let (out, elsewhere) = (dir.path().join("out"), dir.path().join("else"));
        std::fs::create_dir_all(&elsewhere).unwrap();
        let grey = cxr_core::Grey8 {
            width: 4,
            height: 2,
            data: vec![7; 8],
        };
        let file = elsewhere.join("g.png");
        cxr_segment::gallery::write_overlay(&file, &grey, &grey, &grey).unwrap();
        let Block::Thumbnail { href, .. } = linked("c", &file, &out, vec![1]).unwrap() else {
            unreachable!()
        };
        assert_eq!(href, "galleries/g.png");
        assert!(out.join("galleries/g.png").is_file());
        // Inside the folder: linked where it is.
        let inside = out.join("exp/a b.png");
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        std::fs::copy(&file, &inside).unwrap();
        let Block::Thumbnail { href, .. } = thumbnail("c", &inside, &out).unwrap() else {
            unreachable!()
        };
        assert_eq!(href, "exp/a b.png");
    }
}
