//! The held-out test: full-pipeline Dice per image on the test patients (any weights, the same split as
//! training), and overlays of the worst cases.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cxr_core::Grey8;

use super::{DiceStats, TrainConfig, WorstCase};
use crate::SegmentError;
use crate::data::{self, Part, Sample};
use crate::infer::{Segmenter, dice};

/// Per-image held-out Dice of the full pipeline.
pub struct HeldOut {
    /// (name, source, Dice, predicted mask) in the test set's order.
    pub cases: Vec<(String, String, f64, Grey8)>,
}

impl HeldOut {
    /// (mean, min, mean per file-name prefix) over every case.
    pub(super) fn summary(&self) -> (Option<f64>, Option<f64>, BTreeMap<String, f64>) {
        if self.cases.is_empty() {
            return (None, None, BTreeMap::new());
        }
        let d: Vec<f64> = self.cases.iter().map(|c| c.2).collect();
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        let min = d.iter().copied().fold(f64::INFINITY, f64::min);
        let mut groups: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        for (name, _, dice, _) in &self.cases {
            // `CHNCXR_0001_0` → `CHNCXR` (Shenzhen), `lung-00012` → `lung` (synthetic).
            let prefix = name.split(['_', '-']).next().unwrap_or("").to_string();
            let g = groups.entry(prefix).or_default();
            g.0 += dice;
            g.1 += 1;
        }
        (
            Some(mean),
            Some(min),
            groups
                .into_iter()
                .map(|(k, (s, n))| (k, s / n as f64))
                .collect(),
        )
    }

    /// Dice statistics per source.
    pub fn by_source(&self) -> BTreeMap<String, DiceStats> {
        let mut groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (_, source, dice, _) in &self.cases {
            groups.entry(source.clone()).or_default().push(*dice);
        }
        groups
            .into_iter()
            .map(|(k, v)| (k, DiceStats::of(&v)))
            .collect()
    }
}

/// Full-pipeline Dice on held-out pairs, one case per pair.
pub fn held_out_dice(seg: &Segmenter, set: &[Sample]) -> Result<HeldOut, SegmentError> {
    let mut cases = Vec::with_capacity(set.len());
    for chunk in set.chunks(16) {
        let images: Vec<_> = chunk
            .iter()
            .map(|s| s.full_image.clone().unwrap_or_else(|| s.image.clone()))
            .collect();
        let masks = seg.predict_masks(&images)?;
        for (smp, m) in chunk.iter().zip(masks) {
            let truth = smp.full_mask.as_ref().unwrap_or(&smp.mask);
            let d = dice(&m.data, &truth.data);
            cases.push((smp.name.clone(), smp.source.clone(), d, m));
        }
    }
    Ok(HeldOut { cases })
}

/// Held-out Dice per source of any weights on the test patients of `dirs` under the split that `seed` and
/// the fractions define (the same split [`train`] makes): compares UNets trained on different folders on
/// the same patients, e.g. one trained without the Cohen masks on the Cohen test patients.
pub fn evaluate_held_out(
    seg: &Segmenter,
    dirs: &[PathBuf],
    seed: u64,
    val_fraction: f64,
    test_fraction: f64,
) -> Result<BTreeMap<String, DiceStats>, SegmentError> {
    let test: Vec<data::PairFile> = data::list_all(dirs)?
        .into_iter()
        .filter(|p| data::part_of(&p.patient, seed, val_fraction, test_fraction) == Part::Test)
        .collect();
    let set = data::load_pairs(&test, seg.unet().config().size, true)?;
    Ok(held_out_dice(seg, &set)?.by_source())
}

/// How many of the worst held-out cases get an overlay in `W.worst/`.
pub const WORST_SHOWN: usize = 12;

/// Writes overlays of the worst held-out cases (truth outline green, prediction red, lung box yellow) to
/// `W.worst/NN-<source>-<name>.png` and lists them, worst first.
pub(super) fn write_worst_gallery(
    config: &TrainConfig,
    set: &[Sample],
    held: &HeldOut,
) -> Result<Vec<WorstCase>, SegmentError> {
    let dir = config.out.with_extension("worst");
    let mut order: Vec<usize> = (0..held.cases.len()).collect();
    order.sort_by(|&a, &b| held.cases[a].2.total_cmp(&held.cases[b].2));
    let mut out = Vec::new();
    for (rank, &i) in order.iter().take(WORST_SHOWN).enumerate() {
        let (name, source, d, pred) = &held.cases[i];
        let smp = &set[i];
        let image = smp.full_image.as_ref().unwrap_or(&smp.image);
        let truth = smp.full_mask.as_ref().unwrap_or(&smp.mask);
        let file = format!(
            "{:02}-{}.png",
            rank + 1,
            cxr_core::outname::safe_stem(&format!("{source}-{name}"))
        );
        crate::gallery::write_overlay(&dir.join(&file), image, truth, pred)?;
        out.push(WorstCase {
            name: name.clone(),
            source: source.clone(),
            dice: *d,
            overlay: format!(
                "{}/{file}",
                dir.file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
        });
    }
    Ok(out)
}
