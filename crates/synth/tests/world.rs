//! The "done when" checks on generated worlds: masks, class signal, determinism, formats, and the
//! learnability of sources (paper world) and of the disease from the lungs alone (clean world).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cxr_synth::{Pattern, WorldConfig, WorldKind, generate, paper_sources, render_sample};

fn small(kind: WorldKind, per_source: usize, size: u32, seed: u64) -> WorldConfig {
    WorldConfig {
        kind,
        per_source,
        size,
        seed,
        lung_mask_count: 6,
        ..WorldConfig::default()
    }
}

#[derive(Debug, Clone)]
struct Truth {
    source: String,
    path: String,
    label: String,
    selected: bool,
    view: String,
    photometric: String,
    width: usize,
    height: usize,
    lung: (usize, usize, usize, usize),
}

fn read_truth(root: &Path) -> Vec<Truth> {
    let mut r = csv::Reader::from_path(root.join("truth.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    let col = |name: &str| h.iter().position(|c| c == name).unwrap();
    let (src, path, label, sel, view, photo, w, hh) = (
        col("source"),
        col("path"),
        col("label"),
        col("selected"),
        col("view"),
        col("photometric"),
        col("width"),
        col("height"),
    );
    let (lx, ly, lw, lh) = (col("lung_x"), col("lung_y"), col("lung_w"), col("lung_h"));
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            let n = |i: usize| rec[i].parse::<usize>().unwrap();
            Truth {
                source: rec[src].to_string(),
                path: rec[path].to_string(),
                label: rec[label].to_string(),
                selected: &rec[sel] == "true",
                view: rec[view].to_string(),
                photometric: rec[photo].to_string(),
                width: n(w),
                height: n(hh),
                lung: (n(lx), n(ly), n(lw), n(lh)),
            }
        })
        .collect()
}

/// Decodes a world file with the format crates directly, returning raw values (x fastest) and the size.
fn decode(root: &Path, t: &Truth) -> (usize, usize, Vec<f32>) {
    let path = root.join(&t.path);
    let name = t.path.as_str();
    if name.ends_with(".dcm") {
        use dicom_pixeldata::PixelDecoder;
        let obj = dicom_object::open_file(&path).unwrap();
        let pix = obj.decode_pixel_data().unwrap();
        let (w, h) = (pix.columns() as usize, pix.rows() as usize);
        let v: Vec<f32> = pix.to_vec::<f32>().unwrap();
        (w, h, v)
    } else if name.ends_with(".nii.gz") {
        use nifti::{IntoNdArray, NiftiObject};
        let vol = nifti::ReaderOptions::new().read_file(&path).unwrap();
        let arr = vol.into_volume().into_ndarray::<f32>().unwrap();
        let shape = arr.shape().to_vec();
        let (w, h) = (shape[0], shape[1]);
        let mut v = vec![0f32; w * h];
        for y in 0..h {
            for x in 0..w {
                v[y * w + x] = arr[[x, y]];
            }
        }
        (w, h, v)
    } else {
        let img = image::open(&path).unwrap();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let v: Vec<f32> = match &img {
            image::DynamicImage::ImageLuma16(b) => b.as_raw().iter().map(|&x| x as f32).collect(),
            image::DynamicImage::ImageLuma8(b) => b.as_raw().iter().map(|&x| x as f32).collect(),
            other => panic!(
                "{}: unexpected colour type {:?}",
                path.display(),
                other.color()
            ),
        };
        (w, h, v)
    }
}

/// Min-max normalised display values, MONOCHROME1 inverted (as a naive preprocessor would).
fn display(root: &Path, t: &Truth) -> (usize, usize, Vec<f32>) {
    let (w, h, v) = decode(root, t);
    let (lo, hi) = v
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let span = (hi - lo).max(1e-6);
    let inv = t.photometric == "MONOCHROME1";
    let d = v
        .iter()
        .map(|&x| {
            let n = (x - lo) / span;
            if inv { 1.0 - n } else { n }
        })
        .collect();
    (w, h, d)
}

fn files_under(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    cxr_core::fsutil::files_under(root)
        .unwrap()
        .into_iter()
        .map(|p| {
            (
                p.strip_prefix(root).unwrap().to_path_buf(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn masks_cover_the_lungs_and_nothing_else() {
    for (k, spec) in paper_sources().iter().enumerate() {
        for seed in 0..4u64 {
            let s = render_sample(
                spec,
                Pattern::None,
                0.0,
                200,
                220,
                1000 * k as u64 + seed,
                55,
            );
            let (w, h) = (s.width, s.height);
            let area = s.mask.iter().filter(|&&m| m != 0).count() as f32 / (w * h) as f32;
            assert!(
                (0.08..0.5).contains(&area),
                "{}: lung area fraction {area}",
                spec.id
            );
            // Two lungs separated by the mediastinum: the mask has pixels left and right of the midline and
            // none in a band at the body centre.
            let (bx, by, bw, bh) = cxr_synth::bounding_box(&s.mask, w, h).unwrap();
            let cx = bx + bw / 2;
            let left = (by..by + bh).any(|y| (bx..cx - 8).any(|x| s.mask[y * w + x] != 0));
            let right = (by..by + bh).any(|y| (cx + 8..bx + bw).any(|x| s.mask[y * w + x] != 0));
            assert!(left && right, "{}: both lungs present", spec.id);
            let centre_band: usize = (by..by + bh).map(|y| s.mask[y * w + cx] as usize).sum();
            assert!(
                centre_band < bh / 10,
                "{}: mask crosses the mediastinum",
                spec.id
            );
            // Inside the mask the image is lung (dark: air); right outside it, in the same box, it is not.
            let (mut inside, mut ni, mut outside, mut no) = (0.0, 0, 0.0, 0);
            for y in by..by + bh {
                for x in bx..bx + bw {
                    let v = s.display[y * w + x];
                    if s.mask[y * w + x] != 0 {
                        inside += v;
                        ni += 1;
                    } else {
                        outside += v;
                        no += 1;
                    }
                }
            }
            let (inside, outside) = (inside / ni as f32, outside / no as f32);
            assert!(
                inside + 0.08 < outside,
                "{}: lungs {inside} not darker than surroundings {outside}",
                spec.id
            );
            // No pathology was asked for: none anywhere.
            assert!(s.pathology.iter().all(|&p| p == 0.0));
        }
    }
}

#[test]
fn class_signal_lies_inside_the_masks() {
    for (k, spec) in paper_sources().iter().enumerate() {
        for (pattern, seed) in [(Pattern::Covid, 7u64), (Pattern::Pneumonia, 8)] {
            let seed = seed + 100 * k as u64;
            let with = render_sample(spec, pattern, 1.5, 160, 180, seed, 60);
            let without = render_sample(spec, pattern, 0.0, 160, 180, seed, 60);
            assert_eq!(with.mask, without.mask, "same seed, same patient");
            let (w, h) = (with.width, with.height);
            // The pathology map itself is zero outside the mask.
            for (p, m) in with.pathology.iter().zip(&with.mask) {
                assert!(
                    *m != 0 || *p == 0.0,
                    "{}: pathology outside the lungs",
                    spec.id
                );
            }
            assert!(
                with.pathology.iter().any(|&p| p > 0.0),
                "{}: {pattern:?} drew no lesion",
                spec.id
            );
            // In the final image the difference is the pathology alone (same noise, same acquisition), spread
            // only by the source's blur: nearly all of it within a few pixels of the mask.
            let r = 8i64;
            let near = |x: usize, y: usize| {
                (-r..=r).any(|dy| {
                    (-r..=r).any(|dx| {
                        let (xx, yy) = (x as i64 + dx, y as i64 + dy);
                        xx >= 0
                            && yy >= 0
                            && (xx as usize) < w
                            && (yy as usize) < h
                            && with.mask[yy as usize * w + xx as usize] != 0
                    })
                })
            };
            let (mut total, mut inside) = (0.0f64, 0.0f64);
            for y in 0..h {
                for x in 0..w {
                    let d = (with.display[y * w + x] - without.display[y * w + x]).abs() as f64;
                    total += d;
                    if d > 0.0 && near(x, y) {
                        inside += d;
                    }
                }
            }
            assert!(
                total > 0.5,
                "{}: {pattern:?} signal too weak to see ({total})",
                spec.id
            );
            assert!(
                inside / total > 0.99,
                "{}: only {:.3} of the signal near the lungs",
                spec.id,
                inside / total
            );
        }
    }
}

#[test]
fn same_seed_gives_the_same_bytes_on_any_thread_count() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let cfg = small(WorldKind::Clean, 5, 80, 42);
    generate(&cfg, a.path()).unwrap();
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| generate(&cfg, b.path()).unwrap());
    let fa = files_under(a.path());
    let fb = files_under(b.path());
    assert!(fa.len() > 40, "world too small: {} files", fa.len());
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (k, v) in &fa {
        assert!(v == &fb[k], "{} differs between runs", k.display());
    }
    // Another seed changes the images.
    generate(&small(WorldKind::Clean, 5, 80, 43), c.path()).unwrap();
    let fc = files_under(c.path());
    let differing = fa
        .iter()
        .filter(|(k, v)| fc.get(*k).is_some_and(|o| o != *v))
        .count();
    assert!(
        differing > 10,
        "seed barely matters ({differing} files differ)"
    );
}

fn header_of(path: &Path) -> Vec<String> {
    let mut r = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .unwrap();
    r.headers().unwrap().iter().map(str::to_string).collect()
}

fn rows_of(path: &Path, delimiter: u8) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_path(path)
        .unwrap();
    let h: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            h.iter()
                .cloned()
                .zip(rec.iter().map(str::to_string))
                .collect()
        })
        .collect()
}

#[test]
fn every_source_parses_with_the_format_crates_and_follows_docs_datasets() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let n = 10;
    let summary = generate(&small(WorldKind::Paper, n, 96, 7), root).unwrap();
    assert_eq!(summary.sources.len(), 6);
    let truth = read_truth(root);
    for t in &truth {
        let (w, h, v) = decode(root, t);
        assert_eq!((w, h), (t.width, t.height), "{}", t.path);
        let (lo, hi) = v
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        assert!(hi > lo, "{}: flat image", t.path);
        if t.path.ends_with(".png") && (t.source == "bimcv" || t.source == "padchest") {
            assert!(matches!(
                image::open(root.join(&t.path)).unwrap(),
                image::DynamicImage::ImageLuma16(_)
            ));
        }
    }
    // DICOM: identifying-looking tags to test de-identification, windows, some MONOCHROME1.
    let mut mono1 = 0;
    for t in truth.iter().filter(|t| t.source == "covid19-ar") {
        let obj = dicom_object::open_file(root.join(&t.path)).unwrap();
        let s = |tag| {
            obj.element(tag)
                .unwrap()
                .to_str()
                .unwrap()
                .trim()
                .to_string()
        };
        use dicom_dictionary_std::tags;
        assert!(s(tags::PATIENT_NAME).starts_with("SYNTH^PATIENT^"));
        assert!(s(tags::PATIENT_ID).starts_with("COVID-19-AR-"));
        assert!(s(tags::WINDOW_CENTER).parse::<f64>().is_ok());
        assert_eq!(s(tags::PHOTOMETRIC_INTERPRETATION), t.photometric);
        mono1 += (t.photometric == "MONOCHROME1") as usize;
    }
    assert!(mono1 > 0, "no MONOCHROME1 image planted");

    // The paper's selection rules, applied to the metadata as docs/DATASETS.md states them, keep exactly
    // `n` images per source.
    let nih = rows_of(&root.join("ChestX-ray14/Data_Entry_2017.csv"), b',');
    assert_eq!(
        header_of(&root.join("ChestX-ray14/Data_Entry_2017.csv")).join(","),
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
    );
    let kept = nih
        .iter()
        .filter(|r| {
            r["Finding Labels"] == "Pneumonia"
                && ["PA", "AP"].contains(&r["View Position"].as_str())
        })
        .count();
    assert_eq!(kept, n);
    assert!(
        nih.iter().any(|r| r["Finding Labels"].contains('|')),
        "no multi-label distractor"
    );

    let mut chex = rows_of(&root.join("CheXpert-v1.0-small/train.csv"), b',');
    chex.extend(rows_of(&root.join("CheXpert-v1.0-small/valid.csv"), b','));
    let obs = [
        "No Finding",
        "Enlarged Cardiomediastinum",
        "Cardiomegaly",
        "Lung Opacity",
        "Lung Lesion",
        "Edema",
        "Consolidation",
        "Pneumonia",
        "Atelectasis",
        "Pneumothorax",
        "Pleural Effusion",
        "Pleural Other",
        "Fracture",
        "Support Devices",
    ];
    let kept = chex
        .iter()
        .filter(|r| {
            r["Frontal/Lateral"] == "Frontal"
                && ["AP", "PA"].contains(&r["AP/PA"].as_str())
                && r["Pneumonia"] == "1.0"
                && obs.iter().filter(|o| r[**o] == "1.0").count() == 1
        })
        .count();
    assert_eq!(kept, n);
    for r in &chex {
        let rel = r["Path"].strip_prefix("CheXpert-v1.0-small/").unwrap();
        assert!(
            root.join("CheXpert-v1.0-small").join(rel).is_file(),
            "{rel}"
        );
    }

    let pad_csv = root.join("PadChest/PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv");
    let pad_header = header_of(&pad_csv);
    assert_eq!(pad_header.len(), 36);
    assert_eq!(pad_header[0], "");
    let pad = rows_of(&pad_csv, b',');
    let kept = pad
        .iter()
        .filter(|r| {
            let labels: Vec<String> = r["Labels"]
                .trim_matches(['[', ']'])
                .split(',')
                .map(|s| s.trim().trim_matches('\'').trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            ["PA", "AP", "AP_horizontal"].contains(&r["Projection"].as_str())
                && labels == ["pneumonia"]
        })
        .count();
    assert_eq!(kept, n);
    for r in &pad {
        assert!(
            root.join("PadChest")
                .join(&r["ImageDir"])
                .join(&r["ImageID"])
                .is_file()
        );
    }

    let v2 = rows_of(&root.join("V2-COV19-NII/data.csv"), b',');
    let kept = v2
        .iter()
        .filter(|r| ["ap", "pa"].contains(&r["projection"].as_str()))
        .count();
    assert_eq!(kept, n);
    for r in &v2 {
        assert!(
            root.join("V2-COV19-NII/images")
                .join(format!("{}.nii.gz", r["image_id"]))
                .is_file()
        );
    }

    let mut frontal_ar = 0;
    for t in truth.iter().filter(|t| t.source == "covid19-ar") {
        let obj = dicom_object::open_file(root.join(&t.path)).unwrap();
        let vp = obj
            .element(dicom_dictionary_std::tags::VIEW_POSITION)
            .unwrap()
            .to_str()
            .unwrap()
            .trim()
            .to_string();
        frontal_ar += ["AP", "PA"].contains(&vp.as_str()) as usize;
    }
    assert_eq!(frontal_ar, n);
    let clinical = rows_of(
        &root.join("COVID-19-AR/COVID-19-AR-Clinical-Data.csv"),
        b',',
    );
    assert_eq!(clinical.len(), n);

    // BIMCV: one PCR-positive subject per selected image; sidecars are DICOM-JSON.
    let bimcv = root.join("BIMCV-COVID19+/covid19_posi");
    let participants = rows_of(&bimcv.join("participants.tsv"), b'\t');
    assert_eq!(participants.len(), n);
    let pcr = rows_of(&bimcv.join("derivatives/EHR/sil_reg_covid_posi.tsv"), b'\t');
    let positive: BTreeSet<&str> = pcr
        .iter()
        .filter(|r| r["test"] == "PCR" && r["result"] == "POSITIVO")
        .map(|r| r["participant"].as_str())
        .collect();
    assert_eq!(positive.len(), n);
    for t in truth.iter().filter(|t| t.source == "bimcv") {
        let sidecar = root.join(t.path.replace(".png", ".json"));
        let j: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
        assert_eq!(j["00280004"]["Value"][0], "MONOCHROME2");
        assert_eq!(j["00185101"]["Value"][0], t.view.as_str());
    }
    assert_eq!(
        truth
            .iter()
            .filter(|t| t.source == "bimcv" && t.selected)
            .count(),
        n
    );

    // Lung-mask training set: same names, {0,255} masks.
    let imgs: Vec<_> = std::fs::read_dir(root.join("lung-masks/images"))
        .unwrap()
        .collect();
    assert_eq!(imgs.len(), 6);
    for e in imgs {
        let name = e.unwrap().file_name();
        let m = image::open(root.join("lung-masks/masks").join(&name))
            .unwrap()
            .to_luma8();
        assert!(m.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
        assert!(m.pixels().any(|p| p.0[0] == 255));
    }
    let world: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("world.json")).unwrap()).unwrap();
    assert_eq!(world["sources"].as_array().unwrap().len(), 6);
    assert!(world["sources"][0]["gamma"].is_array());
}

/// Features for the source probe: a 24-bin histogram of min-max normalised intensities.
fn histogram(v: &[f32]) -> Vec<f64> {
    let mut h = [0f64; 24];
    for &x in v {
        h[((x * 24.0) as usize).min(23)] += 1.0;
    }
    let n = v.len() as f64;
    h.iter().map(|c| c / n).collect()
}

fn nearest_centroid_loo(x: &[Vec<f64>], y: &[usize]) -> f64 {
    let classes: BTreeSet<usize> = y.iter().copied().collect();
    let mut correct = 0;
    for i in 0..x.len() {
        let mut best = (f64::MAX, usize::MAX);
        for &c in &classes {
            let members: Vec<&Vec<f64>> = (0..x.len())
                .filter(|&j| j != i && y[j] == c)
                .map(|j| &x[j])
                .collect();
            let d: f64 = (0..x[i].len())
                .map(|k| {
                    let m = members.iter().map(|v| v[k]).sum::<f64>() / members.len() as f64;
                    (x[i][k] - m).abs()
                })
                .sum();
            if d < best.0 {
                best = (d, c);
            }
        }
        correct += (best.1 == y[i]) as usize;
    }
    correct as f64 / x.len() as f64
}

#[test]
fn paper_world_sources_are_predictable_from_intensity_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    generate(&small(WorldKind::Paper, 16, 96, 11), root).unwrap();
    let truth: Vec<Truth> = read_truth(root)
        .into_iter()
        .filter(|t| t.selected)
        .collect();
    let names: Vec<String> = paper_sources().iter().map(|s| s.id.to_string()).collect();
    let x: Vec<Vec<f64>> = truth
        .iter()
        .map(|t| histogram(&display(root, t).2))
        .collect();
    let y: Vec<usize> = truth
        .iter()
        .map(|t| names.iter().position(|n| *n == t.source).unwrap())
        .collect();
    let acc = nearest_centroid_loo(&x, &y);
    assert!(
        acc >= 0.9,
        "source probe accuracy {acc} (6 sources, chance 0.17)"
    );
}

/// Lung-only features: the lung box split into a 4x6 grid (rows x columns), each cell's mean after z-scoring
/// the box, plus the left/right asymmetry of each row.
fn lung_features(w: usize, d: &[f32], lung: (usize, usize, usize, usize)) -> Vec<f64> {
    let (bx, by, bw, bh) = lung;
    let (rows, cols) = (4, 6);
    let vals: Vec<f64> = (by..by + bh)
        .flat_map(|y| (bx..bx + bw).map(move |x| (x, y)))
        .map(|(x, y)| d[y * w + x] as f64)
        .collect();
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    let sd = (vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / vals.len() as f64)
        .sqrt()
        .max(1e-6);
    let mut cells = vec![0f64; rows * cols];
    let mut counts = vec![0f64; rows * cols];
    for y in by..by + bh {
        for x in bx..bx + bw {
            let (r, c) = (((y - by) * rows) / bh, ((x - bx) * cols) / bw);
            cells[r * cols + c] += (d[y * w + x] as f64 - mean) / sd;
            counts[r * cols + c] += 1.0;
        }
    }
    let cells: Vec<f64> = cells
        .iter()
        .zip(&counts)
        .map(|(s, n)| s / n.max(1.0))
        .collect();
    let mut f = cells.clone();
    for r in 0..rows {
        let left: f64 = (0..cols / 2).map(|c| cells[r * cols + c]).sum();
        let right: f64 = (cols / 2..cols)
            .map(|c| cells[r * cols + cols - 1 - (c - cols / 2)])
            .sum();
        f.push((left - right).abs());
    }
    f
}

#[allow(clippy::needless_range_loop)]
/// Ridge regression on +-1 targets (normal equations, Gaussian elimination).
fn ridge(x: &[Vec<f64>], y: &[f64], lambda: f64) -> Vec<f64> {
    let d = x[0].len() + 1;
    let mut a = vec![vec![0f64; d + 1]; d];
    for (xi, yi) in x.iter().zip(y) {
        let xe: Vec<f64> = xi.iter().copied().chain([1.0]).collect();
        for r in 0..d {
            for c in 0..d {
                a[r][c] += xe[r] * xe[c];
            }
            a[r][d] += xe[r] * yi;
        }
    }
    for (r, row) in a.iter_mut().enumerate().take(d - 1) {
        row[r] += lambda;
    }
    for i in 0..d {
        let p = (i..d)
            .max_by(|&p, &q| a[p][i].abs().total_cmp(&a[q][i].abs()))
            .unwrap();
        a.swap(i, p);
        for r in 0..d {
            if r != i {
                let f = a[r][i] / a[i][i];
                for c in i..=d {
                    a[r][c] -= f * a[i][c];
                }
            }
        }
    }
    (0..d).map(|i| a[i][d] / a[i][i]).collect()
}

#[test]
fn clean_world_classes_are_separable_from_the_lungs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    generate(&small(WorldKind::Clean, 24, 128, 5), root).unwrap();
    let truth: Vec<Truth> = read_truth(root)
        .into_iter()
        .filter(|t| t.selected)
        .collect();
    let x: Vec<Vec<f64>> = truth
        .iter()
        .map(|t| {
            let (w, _, d) = display(root, t);
            lung_features(w, &d, t.lung)
        })
        .collect();
    let y: Vec<f64> = truth
        .iter()
        .map(|t| if t.label == "covid" { 1.0 } else { -1.0 })
        .collect();
    // Two folds by patient order; every source contributes to both folds and both classes.
    let (mut scores, mut positives) = (Vec::new(), Vec::new());
    for fold in 0..2 {
        let train: Vec<usize> = (0..x.len()).filter(|i| i % 4 / 2 != fold).collect();
        let test: Vec<usize> = (0..x.len()).filter(|i| i % 4 / 2 == fold).collect();
        let wts = ridge(
            &train.iter().map(|&i| x[i].clone()).collect::<Vec<_>>(),
            &train.iter().map(|&i| y[i]).collect::<Vec<_>>(),
            1.0,
        );
        for &i in &test {
            let s: f64 =
                x[i].iter().zip(&wts).map(|(a, b)| a * b).sum::<f64>() + wts[wts.len() - 1];
            scores.push(s);
            positives.push(y[i] > 0.0);
        }
    }
    let auc = cxr_core::auc::roc_auc(&scores, &positives).unwrap();
    assert!(auc >= 0.8, "lung-only class AUC in the clean world {auc}");
}
