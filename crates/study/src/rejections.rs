//! The warning for a lung-crop rejection rule that hits one source far harder than the others.
//!
//! The segment stage drops images whose predicted mask is empty or whose lung box is too small (PAPER.md step
//! 3). When it drops many more images of one source than of the rest, the classifier trains and is tested on a
//! different mix per source (e.g. only the easy, upright Covid-19 films survive), so the rejection rule itself
//! becomes a source confounder. The rule, [`uneven`]: a source is flagged when
//! - it holds at least [`MIN_IMAGES`] images (a rate over a handful of images says nothing), and
//! - its rejection rate is at least [`RATIO`] times the pooled rate of all the other sources, and
//! - at least [`MIN_GAP`] (10 percentage points) above that pooled rate.
//!
//! Both conditions are needed: twice 1 % is a ratio without consequence, and 60 % against 50 % is a gap
//! every source shares.

use serde::Serialize;

/// Fewest images a source must hold to be flagged.
pub const MIN_IMAGES: usize = 10;
/// Its rate must be at least this multiple of the other sources' pooled rate ...
pub const RATIO: f64 = 2.0;
/// ... and at least this far above it (a fraction: 0.10 = 10 percentage points).
pub const MIN_GAP: f64 = 0.10;

/// The rule in words, as the report and `results.json` state it.
pub fn rule() -> String {
    format!(
        "a source is flagged when it holds at least {MIN_IMAGES} images and its rejection rate is at least \
         {RATIO:.0}x the pooled rate of all the other sources and at least {:.0} percentage points above it",
        MIN_GAP * 100.0
    )
}

/// One source that loses far more images than the others.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnevenRejection {
    pub source: String,
    pub images: usize,
    pub rejected: usize,
    /// `rejected / images`.
    pub rate: f64,
    /// Rejected over images of every other source together.
    pub others_rate: f64,
    pub message: String,
}

/// The sources flagged by the module's rule, given `(source, images, rejected)` per source.
pub fn uneven(counts: &[(String, usize, usize)]) -> Vec<UnevenRejection> {
    let (all_images, all_rejected) = counts
        .iter()
        .fold((0, 0), |(n, r), (_, i, j)| (n + i, r + j));
    let mut out = Vec::new();
    for (source, images, rejected) in counts {
        let others_images = all_images - images;
        if *images < MIN_IMAGES || others_images == 0 {
            continue;
        }
        let rate = *rejected as f64 / *images as f64;
        let others_rate = (all_rejected - rejected) as f64 / others_images as f64;
        // The small epsilon keeps a gap of exactly 10 points (e.g. 15 % against 5 %) on the flagged side
        // despite binary rounding.
        if rate >= RATIO * others_rate && rate - others_rate >= MIN_GAP - 1e-12 {
            out.push(UnevenRejection {
                source: source.clone(),
                images: *images,
                rejected: *rejected,
                rate,
                others_rate,
                message: format!(
                    "The lung-crop rejection rules dropped {rejected} of {images} images ({:.0}%) of source \
                     `{source}` against {:.0}% of the other sources: the classifier sees a different mix of \
                     that source than of the others, so the rejection rule itself can act as a source \
                     confounder (check the segmenter on that source before reading its results).",
                    rate * 100.0,
                    others_rate * 100.0
                ),
            });
        }
    }
    out
}

/// `(source, images, rejected)` per source from the segment stage's summary (`by_source`), sorted by source;
/// empty for a summary written before it counted per source.
pub fn per_source(segment: &cxr_segment::SegmentSummary) -> Vec<(String, usize, usize)> {
    segment
        .by_source
        .iter()
        .map(|(source, c)| (source.clone(), c.images, c.rejected.values().sum()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(v: &[(&str, usize, usize)]) -> Vec<(String, usize, usize)> {
        v.iter().map(|&(s, n, r)| (s.to_string(), n, r)).collect()
    }

    #[test]
    fn balanced_rejections_give_no_warning() {
        assert!(uneven(&c(&[("a", 100, 5), ("b", 80, 4), ("c", 120, 7)])).is_empty());
        // A high rate that every source shares is not a source effect.
        assert!(uneven(&c(&[("a", 100, 60), ("b", 100, 50)])).is_empty());
        // Nor is a doubled rate of a few points.
        assert!(uneven(&c(&[("a", 100, 4), ("b", 100, 2)])).is_empty());
    }

    #[test]
    fn one_source_at_40_percent_against_5_warns() {
        let w = uneven(&c(&[("cohen", 50, 20), ("nih", 100, 5), ("bimcv", 100, 5)]));
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].source, "cohen");
        assert_eq!((w[0].images, w[0].rejected), (50, 20));
        assert!((w[0].rate - 0.40).abs() < 1e-12);
        assert!((w[0].others_rate - 0.05).abs() < 1e-12);
        assert!(w[0].message.contains("`cohen`") && w[0].message.contains("40%"));
        // Exactly on the gap (15 % against 5 %) still warns.
        assert_eq!(uneven(&c(&[("a", 20, 3), ("b", 100, 5)])).len(), 1);
    }

    #[test]
    fn counts_come_from_the_segment_summary() {
        let counts = |images, kept, rejected: &[(&str, usize)]| cxr_segment::infer::SourceCounts {
            images,
            kept,
            rejected: rejected.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
        };
        let summary = cxr_segment::SegmentSummary {
            images: 13,
            kept: 8,
            by_source: [
                (
                    "nih".to_string(),
                    counts(10, 6, &[("empty_mask", 1), ("small_crop", 3)]),
                ),
                ("bimcv".to_string(), counts(3, 2, &[("unreadable", 1)])),
            ]
            .into(),
            ..Default::default()
        };
        assert_eq!(per_source(&summary), c(&[("bimcv", 3, 1), ("nih", 10, 4)]));
        assert!(per_source(&cxr_segment::SegmentSummary::default()).is_empty());
    }

    #[test]
    fn a_two_image_source_never_warns() {
        assert!(uneven(&c(&[("tiny", 2, 2), ("nih", 100, 5)])).is_empty());
        // Nor does a lone source (there is nothing to compare it with).
        assert!(uneven(&c(&[("only", 100, 90)])).is_empty());
    }
}
