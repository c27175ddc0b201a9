//! Lung energy fraction: the share of Grad-CAM energy that falls inside the lung mask, per image, and its
//! summary per source and class. A model that reads the lungs puts most of its heat there; one that reads
//! markers, borders or burned-in text puts it outside.

use std::collections::BTreeMap;
use std::path::Path;

use cxr_core::{Grey8, Label, SourceId};
use serde::{Deserialize, Serialize};

use crate::error::{ExplainError, Result};
use crate::gradcam::Heatmap;
use crate::occlusion::MASK_THRESHOLD;

/// Share of `heat`'s energy (sum of its non-negative values) inside the mask (values >= 128). The map and the
/// mask must have the same size (resize the map first: [`Heatmap::resize`]). `None` when the map holds no
/// energy at all (the explained logit had no positive evidence anywhere).
pub fn lung_energy_fraction(heat: &Heatmap, mask: &Grey8) -> Result<Option<f64>> {
    if heat.width != mask.width as usize || heat.height != mask.height as usize {
        return Err(ExplainError::shape(
            "lung mask",
            format!(
                "mask is {}x{} but the heatmap is {}x{}",
                mask.width, mask.height, heat.width, heat.height
            ),
        ));
    }
    let (mut inside, mut total) = (0f64, 0f64);
    for (&h, &m) in heat.data.iter().zip(&mask.data) {
        let h = h.max(0.0) as f64;
        total += h;
        if m >= MASK_THRESHOLD {
            inside += h;
        }
    }
    Ok((total > 0.0).then(|| inside / total))
}

/// How many cells of a saliency map `map_width` cells wide span one lung of `mask`: half the width of the
/// lung field's bounding box (both lungs), in map cells. `None` for an empty mask. This is what decides
/// whether a lung energy fraction means anything: the audit abstains below `Thresholds::min_lung_cells`.
pub fn lung_cells(mask: &Grey8, map_width: usize) -> Option<f64> {
    let w = mask.width as usize;
    let (mut lo, mut hi) = (usize::MAX, 0usize);
    for row in mask.data.chunks(w.max(1)) {
        for (x, &m) in row.iter().enumerate() {
            if m >= MASK_THRESHOLD {
                lo = lo.min(x);
                hi = hi.max(x);
            }
        }
    }
    (lo <= hi && w > 0).then(|| map_width as f64 * ((hi - lo + 1) as f64 / 2.0) / w as f64)
}

/// One row of `lung_energy.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyRow {
    pub id: String,
    pub source: SourceId,
    pub label: Label,
    /// The model's Covid-19 logit.
    pub logit: f32,
    /// Share of the heat inside the lungs; empty when the map had no energy.
    pub lung_energy: Option<f64>,
    /// Share of the image that is lung (what a map spread evenly would score).
    pub mask_area: f64,
    /// Native saliency-map cells across one lung ([`lung_cells`]); empty when the map's resolution is unknown.
    #[serde(default)]
    pub lung_cells: Option<f64>,
}

impl EnergyRow {
    /// Share of the heat outside the lungs (`1 - lung_energy`); galleries sort by it, most outside first.
    pub fn outside_share(&self) -> Option<f64> {
        self.lung_energy.map(|e| 1.0 - e)
    }
}

/// Lung energy of one (source, class) group. Statistics are over the images whose map had energy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergySummary {
    pub source: SourceId,
    pub label: Label,
    /// Images in the group.
    pub n: usize,
    /// Images whose map had no energy (left out of the statistics).
    pub n_empty: usize,
    pub mean: Option<f64>,
    pub median: Option<f64>,
    pub sd: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Mean share of the image that is lung: the fraction an evenly spread map would get.
    pub mean_mask_area: f64,
}

/// Groups rows by (source, class) in sorted order and summarises each group.
pub fn summarise(rows: &[EnergyRow]) -> Vec<EnergySummary> {
    let mut groups: BTreeMap<(String, Label), Vec<&EnergyRow>> = BTreeMap::new();
    for r in rows {
        groups
            .entry((r.source.as_str().to_string(), r.label))
            .or_default()
            .push(r);
    }
    groups
        .into_values()
        .map(|g| {
            let mut v: Vec<f64> = g.iter().filter_map(|r| r.lung_energy).collect();
            v.sort_by(f64::total_cmp);
            let k = v.len();
            let mean = (k > 0).then(|| v.iter().sum::<f64>() / k as f64);
            let sd = mean
                .filter(|_| k > 1)
                .map(|m| (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (k - 1) as f64).sqrt());
            let median = (k > 0).then(|| {
                if k % 2 == 1 {
                    v[k / 2]
                } else {
                    (v[k / 2 - 1] + v[k / 2]) / 2.0
                }
            });
            EnergySummary {
                source: g[0].source.clone(),
                label: g[0].label,
                n: g.len(),
                n_empty: g.len() - k,
                mean,
                median,
                sd,
                min: v.first().copied(),
                max: v.last().copied(),
                mean_mask_area: g.iter().map(|r| r.mask_area).sum::<f64>() / g.len() as f64,
            }
        })
        .collect()
}

/// Mean lung energy over all rows with energy, for the audit's verdict.
pub fn mean_lung_energy(rows: &[EnergyRow]) -> Option<f64> {
    let v: Vec<f64> = rows.iter().filter_map(|r| r.lung_energy).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Serialises rows to CSV bytes (header from the struct's fields; `None` as an empty cell).
pub(crate) fn to_csv<T: Serialize>(rows: &[T], path: &Path) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r).map_err(|e| ExplainError::Csv {
            path: path.to_path_buf(),
            line: 0,
            message: e.to_string(),
        })?;
    }
    w.into_inner().map_err(|e| ExplainError::Csv {
        path: path.to_path_buf(),
        line: 0,
        message: e.to_string(),
    })
}

/// Writes `lung_energy.csv` (`id, source, label, logit, lung_energy, mask_area`) atomically.
pub fn write_energy_csv(path: &Path, rows: &[EnergyRow]) -> Result<()> {
    let bytes = to_csv(rows, path)?;
    cxr_core::fsutil::write_atomic(path, &bytes)?;
    Ok(())
}

/// Reads `lung_energy.csv` back (as written by [`write_energy_csv`]).
pub fn read_energy_csv(path: &Path) -> Result<Vec<EnergyRow>> {
    let mut rdr = csv::Reader::from_path(path).map_err(|e| ExplainError::Csv {
        path: path.to_path_buf(),
        line: 0,
        message: e.to_string(),
    })?;
    rdr.deserialize()
        .map(|r| {
            r.map_err(|e: csv::Error| ExplainError::Csv {
                path: path.to_path_buf(),
                line: e.position().map_or(0, |p| p.line()),
                message: e.to_string(),
            })
        })
        .collect()
}

/// Writes the per source and class summary (`source, label, n, n_empty, mean, median, sd, min, max,
/// mean_mask_area`) atomically.
pub fn write_summary_csv(path: &Path, summary: &[EnergySummary]) -> Result<()> {
    let bytes = to_csv(summary, path)?;
    cxr_core::fsutil::write_atomic(path, &bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(source: &str, label: Label, e: Option<f64>) -> EnergyRow {
        EnergyRow {
            id: format!("{source}-{e:?}"),
            source: SourceId::new(source).unwrap(),
            label,
            logit: 0.0,
            lung_energy: e,
            mask_area: 0.25,
            lung_cells: None,
        }
    }

    #[test]
    fn lung_cells_count_map_cells_across_one_lung() {
        // Lung field from x = 8 to x = 55 of a 64 px image: 48 px, one lung 24 px; a 4-cell map: 1.5 cells.
        let mut data = vec![0u8; 64 * 64];
        for y in 10..50 {
            for x in (8..24).chain(40..56) {
                data[y * 64 + x] = 255;
            }
        }
        let mask = Grey8::new(64, 64, data).unwrap();
        assert_eq!(lung_cells(&mask, 4), Some(1.5));
        assert_eq!(lung_cells(&mask, 32), Some(12.0));
        assert_eq!(lung_cells(&Grey8::new(4, 4, vec![0; 16]).unwrap(), 4), None);
        // A lung_energy.csv written before the column existed still reads.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("old.csv");
        std::fs::write(
            &p,
            "id,source,label,logit,lung_energy,mask_area\na,nih,covid,0.5,0.4,0.3\n",
        )
        .unwrap();
        let rows = read_energy_csv(&p).unwrap();
        assert_eq!(rows[0].lung_cells, None);
    }

    #[test]
    fn fraction_counts_heat_inside_the_mask() {
        let heat = Heatmap::new(2, 2, vec![1.0, 3.0, 0.0, 4.0]).unwrap();
        let mask = Grey8::new(2, 2, vec![255, 0, 255, 255]).unwrap();
        assert_eq!(lung_energy_fraction(&heat, &mask).unwrap(), Some(5.0 / 8.0));
        let cold = Heatmap::new(2, 2, vec![0.0; 4]).unwrap();
        assert_eq!(lung_energy_fraction(&cold, &mask).unwrap(), None);
        let wrong = Grey8::new(1, 4, vec![0; 4]).unwrap();
        assert!(lung_energy_fraction(&heat, &wrong).is_err());
    }

    #[test]
    fn summary_groups_by_source_and_class() {
        let rows = vec![
            row("nih", Label::Pneumonia, Some(0.2)),
            row("bimcv", Label::Covid, Some(0.9)),
            row("nih", Label::Pneumonia, Some(0.4)),
            row("nih", Label::Pneumonia, None),
            row("bimcv", Label::Covid, Some(0.5)),
            row("bimcv", Label::Covid, Some(0.6)),
        ];
        let s = summarise(&rows);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].source.as_str(), "bimcv");
        assert_eq!((s[0].n, s[0].n_empty), (3, 0));
        assert!((s[0].mean.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s[0].median, Some(0.6));
        assert!((s[0].sd.unwrap() - (0.26f64 / 6.0).sqrt()).abs() < 1e-12);
        assert_eq!((s[1].n, s[1].n_empty), (3, 1));
        assert!((s[1].median.unwrap() - 0.3).abs() < 1e-12);
        assert_eq!((s[1].min, s[1].max), (Some(0.2), Some(0.4)));
        assert!((mean_lung_energy(&rows).unwrap() - 0.52).abs() < 1e-12);
        let dir = tempfile::tempdir().unwrap();
        let rp = dir.path().join("lung_energy.csv");
        write_energy_csv(&rp, &rows).unwrap();
        assert_eq!(read_energy_csv(&rp).unwrap(), rows);
        std::fs::write(&rp, "id,source\nx,nih\n").unwrap();
        assert!(
            read_energy_csv(&rp)
                .unwrap_err()
                .to_string()
                .contains("lung_energy.csv")
        );
        let p = dir.path().join("s.csv");
        write_summary_csv(&p, &s).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("source,label,n,n_empty,mean,median,sd,min,max,mean_mask_area\n"));
        assert!(text.contains("nih,pneumonia,3,1,"), "{text}");
    }
}
