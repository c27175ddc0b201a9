//! A pre-flight walk over a DICOM file's element headers, before `dicom-object` parses it.
//!
//! `dicom-parser` reserves and zero-fills each element's *declared* length before reading it, so one corrupt
//! length field in a 10 KB file can make it allocate gigabytes (measured: 700 MB for a corrupted 10 KB MR
//! file). This walk checks that every defined length fits in the bytes that remain (and in its enclosing
//! sequence or item), recursing into sequences and items, without allocating anything. Deflated data sets are
//! inflated up to a bound first.

use std::io::Read;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use crate::format::DicomFlavour;

const MAX_DEPTH: usize = 32;
/// Largest inflated size accepted for a deflated data set, as a multiple of the compressed size (plus 64 MB).
const MAX_INFLATE_RATIO: usize = 200;

#[derive(Clone, Copy)]
struct Enc {
    implicit: bool,
    big: bool,
}

struct Walker<'a> {
    b: &'a [u8],
    enc: Enc,
}

impl Walker<'_> {
    fn u16_at(&self, o: usize) -> u16 {
        let a = [self.b[o], self.b[o + 1]];
        if self.enc.big {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        }
    }
    fn u32_at(&self, o: usize) -> u32 {
        let a = [self.b[o], self.b[o + 1], self.b[o + 2], self.b[o + 3]];
        if self.enc.big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }

    /// Walks elements in `[pos, end)`; with `until_delim`, stops after an item/sequence delimiter and returns
    /// the position after it. Returns the end position reached.
    fn elements(
        &self,
        mut pos: usize,
        end: usize,
        depth: usize,
        until_delim: bool,
    ) -> Result<usize, String> {
        if depth > MAX_DEPTH {
            return Err(format!("sequences nested deeper than {MAX_DEPTH}"));
        }
        while pos < end {
            if pos + 8 > end {
                // Trailing padding shorter than a header: the parser reports it; nothing to allocate.
                return Ok(end);
            }
            let tag = Tag(self.u16_at(pos), self.u16_at(pos + 2));
            if tag.0 == 0xFFFE {
                match tag.1 {
                    0xE00D | 0xE0DD => {
                        if until_delim {
                            return Ok(pos + 8);
                        }
                        pos += 8;
                        continue;
                    }
                    _ => return Err(format!("item tag {tag} outside a sequence at byte {pos}")),
                }
            }
            let (vr, len, header) = if self.enc.implicit {
                let vr = match StandardDataDictionary.by_tag(tag).map(|e| e.vr()) {
                    Some(VirtualVr::Exact(vr)) => vr,
                    _ => VR::UN,
                };
                (vr, self.u32_at(pos + 4), 8)
            } else {
                let vr_bytes = [self.b[pos + 4], self.b[pos + 5]];
                let vr = std::str::from_utf8(&vr_bytes)
                    .ok()
                    .and_then(|s| s.parse::<VR>().ok())
                    .ok_or_else(|| {
                        format!("element {tag} at byte {pos}: invalid VR {vr_bytes:?}")
                    })?;
                if matches!(
                    vr,
                    VR::OB
                        | VR::OD
                        | VR::OF
                        | VR::OL
                        | VR::OV
                        | VR::OW
                        | VR::SQ
                        | VR::SV
                        | VR::UC
                        | VR::UN
                        | VR::UR
                        | VR::UT
                        | VR::UV
                ) {
                    if pos + 12 > end {
                        return Err(format!("element {tag} at byte {pos}: header truncated"));
                    }
                    (vr, self.u32_at(pos + 8), 12)
                } else {
                    (vr, self.u16_at(pos + 6) as u32, 8)
                }
            };
            let body = pos + header;
            if len == u32::MAX {
                // Undefined length: a sequence (or encapsulated pixel data, or UN holding a sequence).
                let pixel = tag == Tag(0x7FE0, 0x0010);
                pos = self.items(body, end, depth + 1, pixel)?;
                continue;
            }
            let len = len as usize;
            if body + len > end {
                return Err(format!(
                    "element {tag} at byte {pos} declares {len} bytes, only {} remain",
                    end.saturating_sub(body)
                ));
            }
            if vr == VR::SQ {
                self.items_defined(body, body + len, depth + 1)?;
            }
            pos = body + len;
        }
        if until_delim && end == self.b.len() {
            // An undefined-length item or sequence that never closes: the file is truncated.
            return Err(
                "undefined-length sequence or item not closed before the end of the file".into(),
            );
        }
        Ok(pos)
    }

    /// Items of an undefined-length sequence, up to its sequence delimiter.
    fn items(
        &self,
        mut pos: usize,
        end: usize,
        depth: usize,
        pixel: bool,
    ) -> Result<usize, String> {
        while pos + 8 <= end {
            let tag = Tag(self.u16_at(pos), self.u16_at(pos + 2));
            let len = self.u32_at(pos + 4);
            match (tag.0, tag.1) {
                (0xFFFE, 0xE0DD) => return Ok(pos + 8),
                (0xFFFE, 0xE000) => {
                    let body = pos + 8;
                    if len == u32::MAX {
                        if pixel {
                            return Err("encapsulated pixel data item of undefined length".into());
                        }
                        pos = self.elements(body, end, depth + 1, true)?;
                    } else {
                        let len = len as usize;
                        if body + len > end {
                            return Err(format!(
                                "item at byte {pos} declares {len} bytes, only {} remain",
                                end.saturating_sub(body)
                            ));
                        }
                        if !pixel {
                            self.elements(body, body + len, depth + 1, false)?;
                        }
                        pos = body + len;
                    }
                }
                _ => return Err(format!("expected an item at byte {pos}, found {tag}")),
            }
        }
        Err("undefined-length sequence not closed before the end of the file".into())
    }

    /// Items of a defined-length sequence spanning `[pos, end)`.
    fn items_defined(&self, mut pos: usize, end: usize, depth: usize) -> Result<(), String> {
        while pos + 8 <= end {
            let tag = Tag(self.u16_at(pos), self.u16_at(pos + 2));
            let len = self.u32_at(pos + 4);
            if tag != Tag(0xFFFE, 0xE000) {
                return Err(format!("expected an item at byte {pos}, found {tag}"));
            }
            let body = pos + 8;
            if len == u32::MAX {
                pos = self.elements(body, end, depth + 1, true)?;
            } else {
                let len = len as usize;
                if body + len > end {
                    return Err(format!(
                        "item at byte {pos} declares {len} bytes, only {} remain",
                        end - body
                    ));
                }
                self.elements(body, body + len, depth + 1, false)?;
                pos = body + len;
            }
        }
        Ok(())
    }
}

/// Checks the element lengths of a whole DICOM file. `Err` holds a message for the caller to wrap.
pub(super) fn check_lengths(bytes: &[u8], flavour: DicomFlavour) -> Result<(), String> {
    let start = match flavour {
        DicomFlavour::Preamble => 132,
        DicomFlavour::NoPreamble => 4,
        DicomFlavour::NoMeta => 0,
    };
    if bytes.len() < start {
        return Err("file shorter than its preamble".into());
    }
    let mut pos = start;
    let mut ts = String::new();
    if flavour != DicomFlavour::NoMeta {
        // File meta group: explicit VR little endian, group 0x0002.
        let meta = Walker {
            b: bytes,
            enc: Enc {
                implicit: false,
                big: false,
            },
        };
        while pos + 8 <= bytes.len() && meta.u16_at(pos) == 0x0002 {
            let elem = meta.u16_at(pos + 2);
            let vr = [bytes[pos + 4], bytes[pos + 5]];
            // An unknown VR makes dicom-object's meta reader take the next four bytes as a length and
            // allocate it (found by the corrupt-input suite: one flipped byte, a 775 MB request).
            if std::str::from_utf8(&vr)
                .ok()
                .and_then(|s| s.parse::<VR>().ok())
                .is_none()
            {
                return Err(format!(
                    "file meta element (0002,{elem:04X}) at byte {pos}: invalid VR {vr:?}"
                ));
            }
            let (len, header) =
                if matches!(&vr, b"OB" | b"UN" | b"UT" | b"SQ" | b"OW" | b"UC" | b"UR") {
                    if pos + 12 > bytes.len() {
                        return Err("file meta truncated".into());
                    }
                    (meta.u32_at(pos + 8) as usize, 12)
                } else {
                    (meta.u16_at(pos + 6) as usize, 8)
                };
            if pos + header + len > bytes.len() {
                return Err(format!(
                    "file meta element (0002,{elem:04X}) declares {len} bytes past the end"
                ));
            }
            if elem == 0x0010 {
                ts = String::from_utf8_lossy(&bytes[pos + header..pos + header + len])
                    .trim_end_matches(['\0', ' '])
                    .to_string();
            }
            pos += header + len;
        }
    }
    let (enc, deflated) = match ts.as_str() {
        "1.2.840.10008.1.2" => (
            Enc {
                implicit: true,
                big: false,
            },
            false,
        ),
        "1.2.840.10008.1.2.2" => (
            Enc {
                implicit: false,
                big: true,
            },
            false,
        ),
        "1.2.840.10008.1.2.1.99" => (
            Enc {
                implicit: false,
                big: false,
            },
            true,
        ),
        "" if flavour == DicomFlavour::NoMeta => {
            let explicit =
                bytes.len() > 6 && bytes[4].is_ascii_uppercase() && bytes[5].is_ascii_uppercase();
            (
                Enc {
                    implicit: !explicit,
                    big: false,
                },
                false,
            )
        }
        _ => (
            Enc {
                implicit: false,
                big: false,
            },
            false,
        ),
    };
    if deflated {
        let cap = 64 * 1024 * 1024 + MAX_INFLATE_RATIO * (bytes.len() - pos);
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(&bytes[pos..])
            .take(cap as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("deflated data set: {e}"))?;
        if out.len() > cap {
            return Err(format!("deflated data set inflates past {cap} bytes"));
        }
        let w = Walker { b: &out, enc };
        return w.elements(0, out.len(), 0, false).map(|_| ());
    }
    let w = Walker { b: bytes, enc };
    w.elements(pos, bytes.len(), 0, false).map(|_| ())
}
