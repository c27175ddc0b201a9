//! Readers on generated inputs: exact round trips of formats the shared folder lacks (16-bit PNG, grey+alpha,
//! NIfTI-2 big-endian, gzip without a `.gz` name), decompression bombs refused from the header, and corrupted
//! real files failing with errors, never panics.

use std::io::Write;
use std::path::Path;

use cxr_ingest::{IngestError, read_image};

mod common;
use common::shared_data;

#[test]
fn png16_and_grey_alpha_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (7u32, 5u32);
    let vals: Vec<u16> = (0..w * h).map(|i| (i * 1871 % 65536) as u16).collect();
    let img = image::ImageBuffer::<image::Luma<u16>, _>::from_raw(w, h, vals.clone()).unwrap();
    // A misleading name: the format comes from the bytes.
    let p = dir.path().join("x.jpg");
    img.save_with_format(&p, image::ImageFormat::Png).unwrap();
    let r = read_image(&p).unwrap();
    assert_eq!((r.width, r.height, r.meta.bits_stored), (w, h, 16));
    assert_eq!(r.meta.format, Some(cxr_core::ImageFormat::Png));
    assert_eq!(r.pixels, vals.iter().map(|&v| v as f32).collect::<Vec<_>>());
    assert!(!r.meta.converted_from_colour);

    let la = image::ImageBuffer::<image::LumaA<u8>, _>::from_fn(3, 2, |x, y| {
        image::LumaA([(x * 10 + y) as u8, 7])
    });
    let p = dir.path().join("la.png");
    la.save(&p).unwrap();
    let r = read_image(&p).unwrap();
    assert_eq!(r.pixels, vec![0.0, 10.0, 20.0, 1.0, 11.0, 21.0]);

    let rgb = image::RgbImage::from_fn(2, 1, |x, _| {
        if x == 0 {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([0, 0, 255])
        }
    });
    let p = dir.path().join("rgb.png");
    rgb.save(&p).unwrap();
    let r = read_image(&p).unwrap();
    assert!(r.meta.converted_from_colour);
    assert!(
        (r.pixels[0] - 0.299 * 255.0).abs() < 1e-3 && (r.pixels[1] - 0.114 * 255.0).abs() < 1e-3
    );
}

/// A NIfTI-2 header (540 bytes) + 4 bytes of extension flag + data.
fn nifti2(
    big: bool,
    dims: &[i64],
    datatype: i16,
    bitpix: i16,
    slope: f64,
    inter: f64,
    data: &[u8],
) -> Vec<u8> {
    let mut h = vec![0u8; 544];
    let put_i32 = |h: &mut Vec<u8>, o: usize, v: i32| {
        h[o..o + 4].copy_from_slice(&if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        })
    };
    let put_i16 = |h: &mut Vec<u8>, o: usize, v: i16| {
        h[o..o + 2].copy_from_slice(&if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        })
    };
    let put_i64 = |h: &mut Vec<u8>, o: usize, v: i64| {
        h[o..o + 8].copy_from_slice(&if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        })
    };
    let put_f64 = |h: &mut Vec<u8>, o: usize, v: f64| {
        h[o..o + 8].copy_from_slice(&if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        })
    };
    put_i32(&mut h, 0, 540);
    h[4..12].copy_from_slice(b"n+2\0\r\n\x1a\n");
    put_i16(&mut h, 12, datatype);
    put_i16(&mut h, 14, bitpix);
    put_i64(&mut h, 16, dims.len() as i64);
    for (i, d) in dims.iter().enumerate() {
        put_i64(&mut h, 24 + 8 * i, *d);
    }
    for i in 0..8 {
        put_f64(&mut h, 104 + 8 * i, 1.0);
    }
    put_f64(&mut h, 112, 0.5); // pixdim[1] = x spacing
    put_f64(&mut h, 120, 0.25); // pixdim[2] = y spacing
    put_i64(&mut h, 168, 544);
    put_f64(&mut h, 176, slope);
    put_f64(&mut h, 184, inter);
    h.extend_from_slice(data);
    h
}

#[test]
fn nifti2_big_endian_and_gzip_by_content() {
    let dir = tempfile::tempdir().unwrap();
    // 3 columns (x) x 2 rows (y), int16 big-endian, stored x fastest: data[x + 3y] = 10y + x.
    let vals: Vec<i16> = (0..6).map(|i| (10 * (i / 3) + i % 3) as i16 - 5).collect();
    let data: Vec<u8> = vals.iter().flat_map(|v| v.to_be_bytes()).collect();
    let bytes = nifti2(true, &[3, 2, 1], 4, 16, 2.0, 1.0, &data);
    let p = dir.path().join("be.nii");
    std::fs::write(&p, &bytes).unwrap();
    let r = read_image(&p).unwrap();
    assert_eq!((r.width, r.height), (3, 2));
    let expect: Vec<f32> = vals.iter().map(|&v| v as f32 * 2.0 + 1.0).collect();
    assert_eq!(r.pixels, expect, "row-major, row = y, column = x, scaled");
    assert!(r.meta.rescale_applied && r.meta.signed);
    assert_eq!(r.meta.pixel_spacing, Some((0.25, 0.5)));
    // Same bytes gzip-compressed under a name without `.gz`.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&bytes).unwrap();
    let p = dir.path().join("be-compressed.nii");
    std::fs::write(&p, gz.finish().unwrap()).unwrap();
    assert_eq!(read_image(&p).unwrap().pixels, expect);
    // A volume is refused by default.
    let data: Vec<u8> = (0..12).flat_map(|v: i16| v.to_le_bytes()).collect();
    let p = dir.path().join("vol.nii");
    std::fs::write(&p, nifti2(false, &[3, 2, 2], 4, 16, 0.0, 0.0, &data)).unwrap();
    assert!(matches!(
        read_image(&p).unwrap_err(),
        IngestError::Volume { slices: 2, .. }
    ));
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(bytes);
    c.sum()
}

#[test]
fn decompression_bombs_are_refused_from_the_header() {
    let dir = tempfile::tempdir().unwrap();
    // PNG claiming 100000 x 100000 (a valid IHDR with a correct CRC, no data).
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    // An IDAT (empty zlib stream) and IEND, so the header parses completely.
    for (kind, body) in [
        (
            &b"IDAT"[..],
            &[0x78u8, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01][..],
        ),
        (&b"IEND"[..], &[][..]),
    ] {
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(body);
        png.extend_from_slice(&(body.len() as u32).to_be_bytes());
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    let p = dir.path().join("bomb.png");
    std::fs::write(&p, &png).unwrap();
    let e = read_image(&p).unwrap_err();
    assert!(
        matches!(e, IngestError::TooLarge { width: 100_000, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("bomb.png"));
    // NIfTI-2 claiming 2^20 x 2^20 with 8 bytes of data.
    let p = dir.path().join("bomb.nii");
    std::fs::write(
        &p,
        nifti2(false, &[1 << 20, 1 << 20], 2, 8, 0.0, 0.0, &[0; 8]),
    )
    .unwrap();
    assert!(matches!(
        read_image(&p).unwrap_err(),
        IngestError::TooLarge { .. }
    ));
    // Fuzzing regression: slice counts whose product overflows usize (a multiply-overflow panic before).
    let p = dir.path().join("many-slices.nii");
    std::fs::write(
        &p,
        nifti2(
            false,
            &[4, 4, 1 << 40, 1 << 40, 1 << 40],
            2,
            8,
            0.0,
            0.0,
            &[0; 16],
        ),
    )
    .unwrap();
    let e = read_image(&p).unwrap_err().to_string();
    assert!(
        e.contains("many-slices.nii") && e.contains("overflow"),
        "{e}"
    );
}

#[test]
fn corrupted_real_files_fail_cleanly() {
    let Some(root) = shared_data() else {
        println!("skipped: shared data absent");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = [
        "dicom-edge-cases/MR_small.dcm",
        "dicom-edge-cases/MR_small_RLE.dcm",
        "dicom-edge-cases/MR_small_jp2klossless.dcm",
        "dicom-edge-cases/SC_rgb_jpeg_dcmtk.dcm",
        "dicom-edge-cases/image_dfl.dcm",
        "nifti/standard.nii.gz",
        "nifti/from-real-cxr/MCUCXR_0001_0_256_uint8_nifti2.nii.gz",
        "imlab-lung-masks-demo/1.jpg",
        "imlab-lung-masks-demo/1-mask.png",
    ];
    let mut outcomes = (0, 0, 0);
    for f in files {
        let bytes = std::fs::read(root.join(f)).unwrap();
        let mut variants: Vec<Vec<u8>> = Vec::new();
        for k in 1..8 {
            variants.push(bytes[..bytes.len() * k / 8].to_vec());
        }
        // Deterministic byte corruption past the first 140 bytes (keep the magic so the real decoder runs).
        let mut state = 0x9E3779B97F4A7C15u64;
        for _ in 0..12 {
            let mut v = bytes.clone();
            for _ in 0..8 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = 140 + (state as usize) % (v.len().saturating_sub(140).max(1));
                if at < v.len() {
                    v[at] ^= (state >> 32) as u8 | 1;
                }
            }
            variants.push(v);
        }
        let t0 = std::time::Instant::now();
        for (i, v) in variants.iter().enumerate() {
            let p = dir.path().join(format!(
                "{i}-{}",
                Path::new(f).file_name().unwrap().to_string_lossy()
            ));
            std::fs::write(&p, v).unwrap();
            match read_image(&p) {
                Ok(img) => {
                    assert_eq!(img.pixels.len(), img.width as usize * img.height as usize);
                    outcomes.0 += 1;
                }
                Err(IngestError::Panic { .. }) => outcomes.2 += 1,
                Err(e) => {
                    assert!(
                        e.to_string()
                            .contains(&p.file_name().unwrap().to_string_lossy().to_string()),
                        "{e}"
                    );
                    outcomes.1 += 1;
                }
            }
        }
        println!("{f}: {:.2} s", t0.elapsed().as_secs_f64());
    }
    println!(
        "corrupted inputs: {} decoded anyway, {} clean errors, {} caught decoder panics",
        outcomes.0, outcomes.1, outcomes.2
    );
    assert!(outcomes.1 > 0);
}

#[test]
fn dicom_without_preamble_or_meta_and_with_a_lying_length() {
    let Some(root) = shared_data() else {
        println!("skipped: shared data absent");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let reference = read_image(&root.join("dicom-edge-cases/MR_small.dcm")).unwrap();
    // No preamble: the stream starts with `DICM`.
    let bytes = std::fs::read(root.join("dicom-edge-cases/MR_small.dcm")).unwrap();
    let p = dir.path().join("nopreamble");
    std::fs::write(&p, &bytes[128..]).unwrap();
    assert_eq!(read_image(&p).unwrap().pixels, reference.pixels);
    // No file meta at all (a bare implicit-VR data set, as old PACS exports are).
    let imp = std::fs::read(root.join("dicom-edge-cases/MR_small_implicit.dcm")).unwrap();
    assert_eq!(
        &imp[132..136],
        &[0x02, 0x00, 0x00, 0x00],
        "(0002,0000) group length first"
    );
    let group_len = u32::from_le_bytes(imp[140..144].try_into().unwrap()) as usize;
    let p = dir.path().join("nometa");
    std::fs::write(&p, &imp[144 + group_len..]).unwrap();
    assert_eq!(read_image(&p).unwrap().pixels, reference.pixels);
    // A pixel data length claiming 4 GB in a 10 KB file is refused before the parser allocates it.
    let at = bytes
        .windows(4)
        .rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00])
        .unwrap();
    let mut lying = bytes.clone();
    lying[at + 8..at + 12].copy_from_slice(&0xF000_0000u32.to_le_bytes());
    let p = dir.path().join("lying.dcm");
    std::fs::write(&p, &lying).unwrap();
    let e = read_image(&p).unwrap_err().to_string();
    assert!(e.contains("lying.dcm") && e.contains("declares"), "{e}");
}
