//! Format detection by content (magic bytes), never by file name.

use std::io::Read;

use cxr_core::ImageFormat;

/// How a DICOM stream starts: the standard 128-byte preamble + `DICM`, `DICM` without the preamble, or a bare
/// data set (no file meta group) starting with a group 0x0008 tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DicomFlavour {
    Preamble,
    NoPreamble,
    /// No file meta information: the transfer syntax is guessed (explicit or implicit VR little endian).
    NoMeta,
}

/// Detects the format from the first bytes of a file (at least 352 bytes are needed to recognise NIfTI-2;
/// for gzip streams the decompressed start is examined, see [`detect_format_reader`]).
pub fn detect_format(bytes: &[u8]) -> Option<ImageFormat> {
    detect_detail(bytes).map(|(f, _)| f)
}

/// Like [`detect_format`], also telling how a DICOM file starts.
pub fn detect_detail(bytes: &[u8]) -> Option<(ImageFormat, Option<DicomFlavour>)> {
    if bytes.len() >= 8 && bytes[..8] == *b"\x89PNG\r\n\x1a\n" {
        return Some((ImageFormat::Png, None));
    }
    if bytes.len() >= 3 && bytes[..3] == [0xFF, 0xD8, 0xFF] {
        return Some((ImageFormat::Jpeg, None));
    }
    if bytes.len() >= 132 && bytes[128..132] == *b"DICM" {
        return Some((ImageFormat::Dicom, Some(DicomFlavour::Preamble)));
    }
    if bytes.len() >= 4 && bytes[..4] == *b"DICM" {
        return Some((ImageFormat::Dicom, Some(DicomFlavour::NoPreamble)));
    }
    if is_nifti(bytes) {
        return Some((ImageFormat::Nifti, None));
    }
    // A bare data set: little-endian group 0x0008 (or 0x0002 group length) with a plausible element number.
    if bytes.len() >= 8
        && (bytes[..2] == [0x08, 0x00] || bytes[..2] == [0x02, 0x00])
        && bytes[3] == 0x00
    {
        return Some((ImageFormat::Dicom, Some(DicomFlavour::NoMeta)));
    }
    None
}

/// NIfTI-1 (`sizeof_hdr` 348, magic `n+1\0`/`ni1\0` at 344) or NIfTI-2 (540, `n+2\0...` at 4), either endianness.
fn is_nifti(bytes: &[u8]) -> bool {
    if bytes.len() >= 348 {
        let le = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let be = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if (le == 348 || be == 348)
            && (bytes[344..348] == *b"n+1\0" || bytes[344..348] == *b"ni1\0")
        {
            return true;
        }
    }
    if bytes.len() >= 12 {
        let le = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let be = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if (le == 540 || be == 540) && (bytes[4..8] == *b"n+2\0" || bytes[4..8] == *b"ni2\0") {
            return true;
        }
    }
    false
}

/// Reads the start of a stream (decompressing gzip: `.nii.gz`) and detects the format. Returns the format,
/// the DICOM flavour and whether the stream was gzip.
pub fn detect_format_reader(
    mut reader: impl Read,
) -> std::io::Result<Option<(ImageFormat, Option<DicomFlavour>, bool)>> {
    let mut head = Vec::with_capacity(600);
    (&mut reader).take(600).read_to_end(&mut head)?;
    if head.len() >= 2 && head[..2] == [0x1F, 0x8B] {
        let mut inner = Vec::with_capacity(600);
        let gz = flate2::read::GzDecoder::new(std::io::Cursor::new(head).chain(reader));
        // A truncated gzip still yields its first bytes; errors past them do not matter here.
        let _ = gz.take(600).read_to_end(&mut inner);
        return Ok(match detect_detail(&inner) {
            Some((ImageFormat::Nifti, _)) => Some((ImageFormat::Nifti, None, true)),
            _ => None,
        });
    }
    Ok(detect_detail(&head).map(|(f, d)| (f, d, false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_decide() {
        assert_eq!(
            detect_format(b"\x89PNG\r\n\x1a\n0000"),
            Some(ImageFormat::Png)
        );
        assert_eq!(
            detect_format(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(ImageFormat::Jpeg)
        );
        let mut dcm = vec![0u8; 140];
        dcm[128..132].copy_from_slice(b"DICM");
        assert_eq!(
            detect_detail(&dcm),
            Some((ImageFormat::Dicom, Some(DicomFlavour::Preamble)))
        );
        assert_eq!(
            detect_detail(b"DICM\x02\x00\x00\x00"),
            Some((ImageFormat::Dicom, Some(DicomFlavour::NoPreamble)))
        );
        let mut nii = vec![0u8; 352];
        nii[..4].copy_from_slice(&348u32.to_le_bytes());
        nii[344..348].copy_from_slice(b"n+1\0");
        assert_eq!(detect_format(&nii), Some(ImageFormat::Nifti));
        nii[..4].copy_from_slice(&348u32.to_be_bytes());
        assert_eq!(detect_format(&nii), Some(ImageFormat::Nifti));
        let mut nii2 = vec![0u8; 540];
        nii2[..4].copy_from_slice(&540u32.to_le_bytes());
        nii2[4..12].copy_from_slice(b"n+2\0\r\n\x1a\n");
        assert_eq!(detect_format(&nii2), Some(ImageFormat::Nifti));
        assert_eq!(detect_format(b"GIF89a........"), None);
        assert_eq!(detect_format(b""), None);
    }

    #[test]
    fn gzip_is_looked_into() {
        use std::io::Write;
        let mut nii = vec![0u8; 352];
        nii[..4].copy_from_slice(&348u32.to_le_bytes());
        nii[344..348].copy_from_slice(b"n+1\0");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&nii).unwrap();
        let bytes = gz.finish().unwrap();
        assert_eq!(
            detect_format_reader(&bytes[..]).unwrap(),
            Some((ImageFormat::Nifti, None, true))
        );
        // gzip of something else is not an image we read
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"hello world").unwrap();
        assert_eq!(
            detect_format_reader(&gz.finish().unwrap()[..]).unwrap(),
            None
        );
    }
}
