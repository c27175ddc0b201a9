//! The pipeline on generated images: VOI functions against dicom-pixeldata's implementation, window choice,
//! metadata overrides, min-max / percentile / range, resize, 3-channel normalisation and augmentation geometry.

use cxr_core::{Grey8, Lut, Photometric, PixelMeta, RawImage, Rescale, VoiLutFunction, Window};
use cxr_preprocess::display::percentiles;
use cxr_preprocess::resize::{resize, target_size};
use cxr_preprocess::tensor::{IMAGENET_MEAN, IMAGENET_STD};
use cxr_preprocess::{
    AUGMENTATIONS, DisplayOptions, Fallback, Filter, Geometry, MetadataOverride, Normalization,
    PixelError, ResizeMode, WindowMode, WindowSource, augment, preprocess, scalar_mean_std,
    to_chw3, to_grey8,
};
use dicom_pixeldata::{VoiLutFunction as PdFunction, WindowLevel, WindowLevelTransform};

fn window(center: f64, width: f64) -> Window {
    Window {
        center,
        width,
        explanation: String::new(),
    }
}

fn ramp(values: Vec<f32>, meta: PixelMeta) -> RawImage {
    let n = values.len() as u32;
    RawImage::new(n, 1, values, meta).unwrap()
}

fn grey(img: &RawImage, opts: &DisplayOptions) -> (Grey8, cxr_preprocess::Applied) {
    to_grey8(img, &MetadataOverride::default(), opts).unwrap()
}

#[test]
fn window_functions_agree_with_dicom_pixeldata() {
    // Centres and widths with fractional edges, widths near 1, and a window wider than the data.
    let cases = [
        (40.0, 400.0),
        (15000.0, 30000.0),
        (0.5, 1.0),
        (100.0, 2.0),
        (1000.3, 77.7),
        (-50.0, 3.0),
    ];
    let functions = [
        (VoiLutFunction::Linear, PdFunction::Linear),
        (VoiLutFunction::LinearExact, PdFunction::LinearExact),
        (VoiLutFunction::Sigmoid, PdFunction::Sigmoid),
    ];
    let values: Vec<f32> = (-2000..=32000).step_by(3).map(|v| v as f32 * 0.5).collect();
    for (c, w) in cases {
        for (ours_f, theirs_f) in functions {
            let meta = PixelMeta {
                windows: vec![window(c, w)],
                voi_lut_function: ours_f,
                ..PixelMeta::default()
            };
            let img = ramp(values.clone(), meta);
            let (g, applied) = grey(&img, &DisplayOptions::default());
            assert_eq!(applied.source, WindowSource::File);
            let t = WindowLevelTransform::new(
                theirs_f,
                WindowLevel {
                    center: c,
                    width: w,
                },
            );
            for (&x, &ours) in values.iter().zip(&g.data) {
                let theirs = t.apply(f64::from(x), 255.0).round() as u8;
                assert!(
                    ours.abs_diff(theirs) <= 1,
                    "{ours_f:?} {c}/{w} at {x}: ours {ours}, dicom-pixeldata {theirs}"
                );
            }
        }
    }
}

#[test]
fn linear_window_follows_the_standard_at_its_edges() {
    // C.11.2.1.2.1 with c = 100, w = 11: x <= 94.5 → 0, x > 104.5 → 255, linear in between.
    let meta = PixelMeta {
        windows: vec![window(100.0, 11.0)],
        ..PixelMeta::default()
    };
    let img = ramp(vec![94.0, 94.5, 95.0, 99.5, 104.5, 104.6, 200.0], meta);
    let (g, applied) = grey(&img, &DisplayOptions::default());
    assert_eq!(g.data, vec![0, 0, 13, 128, 255, 255, 255]);
    assert_eq!((applied.min, applied.max), (94.5, 104.5));
    assert_eq!(applied.window_string(), "100/11");
}

#[test]
fn window_index_and_voi_lut_preference() {
    let lut = Lut {
        first_mapped: 10,
        bits: 8,
        data: (0..=255u16).rev().collect(),
        explanation: String::new(),
    };
    let meta = PixelMeta {
        windows: vec![window(50.0, 101.0), window(200.0, 101.0)],
        voi_luts: vec![lut],
        ..PixelMeta::default()
    };
    let img = ramp(vec![0.0, 10.0, 100.0, 265.0, 300.0], meta);
    // Both present: the LUT by default (inputs below first_mapped take entry 0, above the last entry).
    let (g, a) = grey(&img, &DisplayOptions::default());
    assert_eq!(a.source, WindowSource::VoiLut);
    assert_eq!(g.data, vec![255, 255, 165, 0, 0]);
    // Windows preferred, second window chosen.
    let opts = DisplayOptions {
        prefer_voi_lut: false,
        voi_index: 1,
        ..DisplayOptions::default()
    };
    let (g, a) = grey(&img, &opts);
    assert_eq!(a.window, Some((200.0, 101.0)));
    assert_eq!(g.data[2], 0);
    assert_eq!(g.data[4], 255);
    let opts = DisplayOptions {
        prefer_voi_lut: false,
        voi_index: 2,
        ..DisplayOptions::default()
    };
    let err = to_grey8(&img, &MetadataOverride::default(), &opts).unwrap_err();
    assert_eq!(
        err,
        PixelError::NoSuchVoi {
            what: "window",
            index: 2,
            available: 2
        }
    );
}

#[test]
fn rescale_applies_before_the_window_and_monochrome1_inverts_after() {
    let meta = PixelMeta {
        bits_stored: 12,
        photometric: Photometric::Monochrome1,
        rescale: Some(Rescale {
            slope: 2.0,
            intercept: -1000.0,
            kind: String::new(),
        }),
        windows: vec![window(0.0, 201.0)],
        ..PixelMeta::default()
    };
    // Stored 400 → -200 (below the window), 500 → 0 (centre), 600 → 200 (above).
    let img = ramp(vec![400.0, 500.0, 600.0], meta);
    let (g, a) = grey(&img, &DisplayOptions::default());
    assert!(a.inverted);
    assert_eq!(g.data, vec![255, 127, 0]);
}

#[test]
fn invalid_windows_are_errors() {
    for w in [0.0, -5.0, f64::NAN] {
        let meta = PixelMeta {
            windows: vec![window(10.0, w)],
            ..PixelMeta::default()
        };
        let img = ramp(vec![1.0, 2.0], meta);
        let err = to_grey8(
            &img,
            &MetadataOverride::default(),
            &DisplayOptions::default(),
        );
        assert!(
            matches!(err, Err(PixelError::InvalidWindow { .. })),
            "{w}: {err:?}"
        );
    }
}

#[test]
fn metadata_window_and_photometric_override_the_file() {
    let meta = PixelMeta {
        windows: vec![window(1000.0, 2000.0)],
        ..PixelMeta::default()
    };
    let img = ramp(vec![0.0, 50.0, 100.0], meta);
    let over = MetadataOverride {
        window: Some(window(50.0, 101.0)),
        photometric: Some(Photometric::Monochrome1),
    };
    let (g, a) = to_grey8(&img, &over, &DisplayOptions::default()).unwrap();
    assert_eq!(a.source, WindowSource::Metadata);
    assert!(a.inverted);
    // LINEAR 50/101: lo = -0.5, y = (x + 0.5) * 255 / 100 → 1.275, 128.775, 255; then 255 - y.
    assert_eq!(g.data, vec![254, 126, 0]);
    // Switched off per source: the file's window, no inversion.
    let opts = DisplayOptions {
        use_metadata: false,
        ..DisplayOptions::default()
    };
    let (_, a) = to_grey8(&img, &over, &opts).unwrap();
    assert_eq!(a.source, WindowSource::File);
    assert!(!a.inverted);
}

#[test]
fn window_less_sources_use_min_max_percentile_or_range() {
    let values: Vec<f32> = (0..1000).map(|v| v as f32 + 100.0).collect();
    let meta = PixelMeta {
        bits_stored: 16,
        ..PixelMeta::default()
    };
    let img = ramp(values.clone(), meta);
    let (g, a) = grey(&img, &DisplayOptions::default());
    assert_eq!(a.source, WindowSource::Minmax);
    assert_eq!((a.min, a.max), (100.0, 1099.0));
    assert_eq!((g.data[0], g.data[999]), (0, 255));
    assert_eq!(g.data[500], (500.0f64 * 255.0 / 999.0).round() as u8);

    let opts = DisplayOptions {
        fallback: Fallback::Percentile,
        percentile: (10.0, 90.0),
        ..DisplayOptions::default()
    };
    let (g, a) = grey(&img, &opts);
    assert_eq!(a.source, WindowSource::Percentile);
    // numpy: percentile(arange(1000) + 100, 10) = 199.9, 90 → 999.1
    assert!(
        (a.min - 199.9).abs() < 1e-9 && (a.max - 999.1).abs() < 1e-9,
        "{a:?}"
    );
    assert_eq!(g.data[0], 0);
    assert_eq!(g.data[50], 0);
    assert_eq!(
        g.data[150],
        ((250.0 - 199.9) * 255.0f64 / 799.2).round() as u8
    );
    assert_eq!(g.data[950], 255);

    let opts = DisplayOptions {
        window: WindowMode::None,
        ..DisplayOptions::default()
    };
    let (g, a) = grey(&img, &opts);
    assert_eq!(a.source, WindowSource::Range);
    assert_eq!((a.min, a.max), (0.0, 65535.0));
    assert_eq!(g.data[999], (1099.0f64 * 255.0 / 65535.0).round() as u8);

    // A constant image is not an error; non-finite values never poison min-max.
    let img = ramp(vec![7.0, 7.0, f32::NAN], PixelMeta::default());
    let (g, _) = grey(&img, &DisplayOptions::default());
    assert_eq!(g.data, vec![0, 0, 0]);
    let img = ramp(vec![f32::NAN, f32::INFINITY], PixelMeta::default());
    assert_eq!(
        to_grey8(
            &img,
            &MetadataOverride::default(),
            &DisplayOptions::default()
        )
        .unwrap_err(),
        PixelError::NoFiniteValue
    );
}

#[test]
fn percentiles_match_numpy_linear_interpolation() {
    let v: Vec<f32> = vec![5.0, 1.0, 4.0, 2.0, 3.0];
    assert_eq!(percentiles(&v, 0.0, 100.0), Some((1.0, 5.0)));
    assert_eq!(percentiles(&v, 50.0, 50.0), Some((3.0, 3.0)));
    // numpy.percentile([1,2,3,4,5], [10, 85]) = [1.4, 4.4]
    let (a, b) = percentiles(&v, 10.0, 85.0).unwrap();
    assert!((a - 1.4).abs() < 1e-9 && (b - 4.4).abs() < 1e-9, "{a} {b}");
}

#[test]
fn resize_geometry_and_filter() {
    assert_eq!(
        target_size(2000, 1000, ResizeMode::Longest, 512),
        (512, 256)
    );
    assert_eq!(target_size(100, 300, ResizeMode::Longest, 600), (200, 600));
    assert_eq!(target_size(2000, 1000, ResizeMode::Square, 224), (224, 224));
    assert_eq!(target_size(2000, 1000, ResizeMode::Keep, 224), (2000, 1000));
    assert_eq!(
        target_size(2000, 1000, ResizeMode::Longest, 0),
        (2000, 1000)
    );

    // A left-dark / right-bright image keeps its halves; a flat image stays flat under every filter.
    let (w, h) = (64u32, 32u32);
    let data: Vec<u8> = (0..h)
        .flat_map(|_| (0..w).map(|x| if x < w / 2 { 10 } else { 200 }))
        .collect();
    let img = Grey8::new(w, h, data).unwrap();
    for f in [
        Filter::Nearest,
        Filter::Bilinear,
        Filter::Lanczos3,
        Filter::Box,
    ] {
        let r = resize(&img, 16, 8, f).unwrap();
        assert_eq!((r.width, r.height), (16, 8));
        assert_eq!(r.get(0, 4), 10, "{f:?}");
        assert_eq!(r.get(15, 4), 200, "{f:?}");
        let flat = resize(&Grey8::new(w, h, vec![77; 64 * 32]).unwrap(), 20, 9, f).unwrap();
        assert!(flat.data.iter().all(|&v| v == 77), "{f:?}");
    }
    // preprocess = display + resize, and the record keeps the input size.
    let meta = PixelMeta::default();
    let raw = RawImage::new(40, 20, (0..800).map(|v| v as f32).collect(), meta).unwrap();
    let geometry = Geometry {
        size: 10,
        resize: ResizeMode::Longest,
        filter: Filter::Bilinear,
    };
    let p = preprocess(
        &raw,
        &MetadataOverride::default(),
        &DisplayOptions::default(),
        &geometry,
    )
    .unwrap();
    assert_eq!((p.image.width, p.image.height), (10, 5));
    assert_eq!(p.input_size, (40, 20));
}

#[test]
fn three_channels_and_normalisation() {
    let img = Grey8::new(2, 1, vec![0, 255]).unwrap();
    let t = to_chw3(&img, Normalization::Unit);
    assert_eq!(t, vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
    let t = to_chw3(&img, Normalization::Imagenet);
    for c in 0..3 {
        assert!((t[2 * c] - (-IMAGENET_MEAN[c] / IMAGENET_STD[c])).abs() < 1e-6);
        assert!((t[2 * c + 1] - (1.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]).abs() < 1e-6);
    }
    let imgs = [
        Grey8::new(2, 1, vec![0, 255]).unwrap(),
        Grey8::new(2, 1, vec![0, 255]).unwrap(),
    ];
    let (mean, std) = scalar_mean_std(&imgs).unwrap();
    assert!((mean - 0.5).abs() < 1e-6 && (std - 0.5).abs() < 1e-6);
    let t = to_chw3(&imgs[0], Normalization::Scalar { mean, std });
    assert_eq!(t, vec![-1.0, 1.0, -1.0, 1.0, -1.0, 1.0]);
}

/// A test image with a bright dot at (x, y).
fn dot(w: u32, h: u32, x: u32, y: u32) -> Grey8 {
    let mut data = vec![0u8; (w * h) as usize];
    for dy in 0..3 {
        for dx in 0..3 {
            data[((y + dy - 1) * w + (x + dx - 1)) as usize] = 255;
        }
    }
    Grey8::new(w, h, data).unwrap()
}

fn centroid(img: &Grey8) -> (f64, f64) {
    let (mut sx, mut sy, mut s) = (0.0, 0.0, 0.0);
    for y in 0..img.height {
        for x in 0..img.width {
            let v = f64::from(img.get(x, y));
            sx += v * f64::from(x);
            sy += v * f64::from(y);
            s += v;
        }
    }
    (sx / s, sy / s)
}

#[test]
fn augmentation_gives_ten_images_with_the_right_geometry() {
    let (w, h) = (101u32, 81u32);
    let (cx, cy) = (50.0, 40.0);
    // The dot sits 30 px right of the centre.
    let img = dot(w, h, 80, 40);
    let out = augment(&img);
    assert_eq!(out.len(), 10);
    let names: Vec<String> = out.iter().map(|(k, _)| k.name()).collect();
    assert_eq!(
        names,
        [
            "orig",
            "flip",
            "rot+2",
            "rot+4",
            "rot-2",
            "rot-4",
            "flip+rot+2",
            "flip+rot+4",
            "flip+rot-2",
            "flip+rot-4"
        ]
    );
    assert_eq!(AUGMENTATIONS.len(), 10);
    for (_, a) in &out {
        assert_eq!((a.width, a.height), (w, h));
    }
    assert_eq!(out[0].1, img);
    // Flip: an exact mirror.
    for y in 0..h {
        for x in 0..w {
            assert_eq!(out[1].1.get(x, y), img.get(w - 1 - x, y));
        }
    }
    // Rotation: the dot turns counter-clockwise (as displayed, y down) about the centre by the angle.
    for (kind, a) in &out {
        let (mut px, py) = (80.0 - cx, 40.0 - cy);
        if kind.flip {
            px = -px;
        }
        let t = f64::from(kind.degrees).to_radians();
        let ex = cx + px * t.cos() + py * t.sin();
        let ey = cy - px * t.sin() + py * t.cos();
        let (gx, gy) = centroid(a);
        assert!(
            (gx - ex).abs() < 0.3 && (gy - ey).abs() < 0.3,
            "{}: dot at ({gx:.2}, {gy:.2}), expected ({ex:.2}, {ey:.2})",
            kind.name()
        );
    }
    // Border fill replicates the edge: a uniform image stays uniform after rotation (no black corners).
    let flat = Grey8::new(40, 30, vec![90; 1200]).unwrap();
    for (k, a) in augment(&flat) {
        assert!(a.data.iter().all(|&v| v == 90), "{}", k.name());
    }
}
