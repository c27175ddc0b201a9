//! SVG plots with plotters' SVG backend: ROC curves with their bootstrap band, reliability diagrams and
//! score histograms per source. Built without any font library: plotters' "naive" font only estimates text
//! extents for layout, and the SVG backend writes every label as a `<text>` element that the browser
//! renders, so the strings are self-contained and embed directly in the HTML report.

use plotters::prelude::*;

use crate::EvalError;
use crate::report::{EvalReport, Group, ModelReport, SetReport};
use cxr_core::Split;

fn err(name: &str) -> impl Fn(&dyn std::fmt::Display) -> EvalError + '_ {
    move |e| EvalError::Plot {
        name: name.to_string(),
        message: e.to_string(),
    }
}

/// A file-name-safe form of a model name (the one rule of `cxr_core::outname`: model names come from the
/// user's predictions files).
pub fn slug(name: &str) -> String {
    cxr_core::outname::safe_stem(name)
}

/// Matplotlib's "tab10": distinct and readable on white.
const TAB10: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

fn color(i: usize) -> RGBAColor {
    let (r, g, b) = TAB10[i % TAB10.len()];
    RGBColor(r, g, b).mix(1.0)
}

fn set_label(s: &SetReport) -> String {
    let auc = match (&s.delong, s.auc.value) {
        (Some(d), _) => format!("AUC {:.3} [{:.3}, {:.3}]", d.auc, d.lo, d.hi),
        (None, Some(a)) => format!("AUC {a:.3}"),
        _ => "AUC n/a".into(),
    };
    format!("{} {} (n={}): {auc}", s.split, s.group.label(), s.n)
}

/// The sets a model's summary plots show: the test split whole and its seen/unseen groups (every
/// non-training split when there is no test split).
pub fn summary_sets(model: &ModelReport) -> Vec<&SetReport> {
    let has_test = model.sets.iter().any(|s| s.split == Split::Test);
    model
        .sets
        .iter()
        .filter(|s| {
            if has_test {
                s.split == Split::Test
            } else {
                s.split != Split::Train
            }
        })
        .filter(|s| matches!(s.group, Group::All | Group::Seen | Group::Unseen))
        .collect()
}

/// Legend text size of the ROC plot, in pixels of its 620 px wide canvas.
pub const LEGEND_FONT: u32 = 15;

/// ROC curves of `sets`, each with its bootstrap band (the interval of the true positive rate at each
/// false positive rate over the resamples).
pub fn roc_svg(title: &str, sets: &[&SetReport]) -> Result<String, EvalError> {
    let e = err(title);
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (620, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(42)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("1 - specificity (false positive rate)")
            .y_desc("sensitivity (true positive rate)")
            .light_line_style(BLACK.mix(0.02))
            .draw()
            .map_err(|x| e(&x))?;
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                BLACK.mix(0.3).stroke_width(1),
            ))
            .map_err(|x| e(&x))?;
        for (i, s) in sets.iter().filter(|s| !s.roc.points.is_empty()).enumerate() {
            let c = color(i);
            if !s.roc.band_lo.is_empty() {
                let mut poly: Vec<(f64, f64)> = s
                    .roc
                    .grid
                    .iter()
                    .zip(&s.roc.band_hi)
                    .map(|(&x, &y)| (x, y))
                    .collect();
                poly.extend(
                    s.roc
                        .grid
                        .iter()
                        .zip(&s.roc.band_lo)
                        .rev()
                        .map(|(&x, &y)| (x, y)),
                );
                chart
                    .draw_series(std::iter::once(Polygon::new(poly, c.mix(0.18).filled())))
                    .map_err(|x| e(&x))?;
            }
            // Step curve: the ROC of a finite set is a staircase between its operating points.
            let pts: Vec<(f64, f64)> = s.roc.points.iter().map(|p| (p[0], p[1])).collect();
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .map_err(|x| e(&x))?
                .label(set_label(s))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            // Opaque and large enough to read when the report scales the plot down.
            .background_style(WHITE)
            .border_style(BLACK.mix(0.5))
            .label_font(("sans-serif", LEGEND_FONT))
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(buf)
}

/// Reliability diagram: observed Covid-19 fraction against mean score per calibration bin.
pub fn reliability_svg(title: &str, sets: &[&SetReport]) -> Result<String, EvalError> {
    let e = err(title);
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (620, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(42)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("mean predicted P(Covid-19) in bin")
            .y_desc("observed fraction Covid-19")
            .light_line_style(BLACK.mix(0.02))
            .draw()
            .map_err(|x| e(&x))?;
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                BLACK.mix(0.3).stroke_width(1),
            ))
            .map_err(|x| e(&x))?;
        for (i, s) in sets.iter().enumerate() {
            let c = color(i);
            let pts: Vec<(f64, f64)> = s
                .reliability
                .iter()
                .filter_map(|b| Some((b.mean_score?, b.observed?)))
                .collect();
            let ece = s
                .ece
                .value
                .map(|v| format!("{v:.3}"))
                .unwrap_or("n/a".into());
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(|x| e(&x))?
                .label(format!(
                    "{} {} (n={}): ECE {ece}",
                    s.split,
                    s.group.label(),
                    s.n
                ))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))
                .map_err(|x| e(&x))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.5))
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(buf)
}

/// Score histograms (x: P(Covid-19), 20 bins), one panel per set (per source in practice), Covid-19 (red)
/// and pneumonia (blue) overlaid.
pub fn histograms_svg(title: &str, sets: &[&SetReport]) -> Result<String, EvalError> {
    let e = err(title);
    let mut buf = String::new();
    let panels = sets.len().max(1);
    let height = 60 + 140 * panels as u32;
    {
        let root = SVGBackend::with_string(&mut buf, (620, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let root = root
            .titled(
                &format!("{title} (P(Covid-19); covid red, pneumonia blue)"),
                ("sans-serif", 16),
            )
            .map_err(|x| e(&x))?;
        let areas = root.split_evenly((panels, 1));
        let covid = RGBColor(200, 40, 40);
        let pneu = RGBColor(40, 90, 200);
        for (area, s) in areas.iter().zip(sets) {
            let h = &s.histogram;
            let top = h
                .covid
                .iter()
                .chain(&h.pneumonia)
                .copied()
                .max()
                .unwrap_or(0)
                .max(1) as f64;
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!(
                        "{} {}: {} covid, {} pneumonia",
                        s.split,
                        s.group.label(),
                        s.n_covid,
                        s.n_pneumonia
                    ),
                    ("sans-serif", 13),
                )
                .margin(6)
                .x_label_area_size(22)
                .y_label_area_size(40)
                .build_cartesian_2d(0f64..1f64, 0f64..top * 1.05)
                .map_err(|x| e(&x))?;
            chart
                .configure_mesh()
                .y_labels(4)
                .y_label_formatter(&|v| format!("{v:.0}"))
                .x_labels(11)
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(|x| e(&x))?;
            let w = 1.0 / h.bins as f64;
            for (counts, c) in [(&h.pneumonia, pneu), (&h.covid, covid)] {
                chart
                    .draw_series(counts.iter().enumerate().filter(|(_, n)| **n > 0).map(
                        |(b, &n)| {
                            Rectangle::new(
                                [(b as f64 * w, 0.0), ((b + 1) as f64 * w, n as f64)],
                                c.mix(0.5).filled(),
                            )
                        },
                    ))
                    .map_err(|x| e(&x))?;
            }
        }
        root.present().map_err(|x| e(&x))?;
    }
    Ok(buf)
}

/// Every plot of a report as (file name, SVG text): per model `roc-<model>.svg`,
/// `reliability-<model>.svg` and `scores-<model>.svg` (per source of the test split, or of the last split
/// evaluated when there is no test split).
pub fn render_plots(report: &EvalReport) -> Result<Vec<(String, String)>, EvalError> {
    let mut out = Vec::new();
    for m in &report.models {
        let name = slug(&m.model);
        let sets = summary_sets(m);
        out.push((
            format!("roc-{name}.svg"),
            roc_svg(&format!("ROC, {}", m.model), &sets)?,
        ));
        // Scores that are not probabilities have no reliability diagram (the report says why).
        if m.probability_metrics_skipped.is_none() {
            out.push((
                format!("reliability-{name}.svg"),
                reliability_svg(&format!("Reliability, {}", m.model), &sets)?,
            ));
        }
        let split = if m.sets.iter().any(|s| s.split == Split::Test) {
            Some(Split::Test)
        } else {
            m.sets.iter().map(|s| s.split).max()
        };
        let per_source: Vec<&SetReport> = m
            .sets
            .iter()
            .filter(|s| Some(s.split) == split && matches!(s.group, Group::Source(_)))
            .collect();
        let per_source = if per_source.is_empty() {
            sets
        } else {
            per_source
        };
        out.push((
            format!("scores-{name}.svg"),
            histograms_svg(&format!("Scores by source, {}", m.model), &per_source)?,
        ));
    }
    Ok(out)
}
