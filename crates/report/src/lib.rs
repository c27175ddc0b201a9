//! Self-contained HTML pages: the study's `report.html` (`cxr reproduce`) and an audit's (`cxr audit`).
//!
//! A report is a list of sections made of plain blocks (paragraphs, tables, inline SVG, PNG thumbnails as data
//! URIs linking to the full images beside the report, verdicts). Rendering needs no network, no JavaScript and no fonts beyond the browser's defaults, so
//! the single file opens anywhere. Every number shown is also in `results.json`, written from the same data.

use std::fmt::Write as _;

use base64::Engine as _;
use serde::Serialize;

/// One block of a section.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Block {
    Paragraph(String),
    /// A notice the reader must not miss (random weights, profile shortcuts, alarms).
    Warning(String),
    Table {
        caption: String,
        header: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    /// Markup produced by our own crates (cxr-eval's tables), inserted as is.
    Html(String),
    /// Inline SVG markup (from cxr-eval's plots).
    Svg {
        caption: String,
        svg: String,
    },
    /// A small PNG (or JPEG) preview embedded as a data URI, linking to the full-size file beside the report
    /// (`href`, relative to the report's folder): keeps the page small while every gallery stays one click
    /// away.
    Thumbnail {
        caption: String,
        #[serde(skip)]
        bytes: Vec<u8>,
        href: String,
    },
    /// An audit verdict: `flagged` = a shortcut was found, `suspicious` = a test warned; `summary` is the
    /// headline in words (the verdict and the test that decided it).
    Verdict {
        model: String,
        flagged: bool,
        suspicious: bool,
        summary: String,
        evidence: Vec<String>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub id: String,
    pub title: String,
    pub blocks: Vec<Block>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub title: String,
    /// What was found, one sentence per experiment: the first thing the page shows.
    pub findings: Vec<String>,
    /// What was run: command line, profile, data, weights, seeds, versions — as label/value pairs.
    pub run_facts: Vec<(String, String)>,
    pub sections: Vec<Section>,
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// SVG from our own plotting code is trusted markup, but strip an XML prolog so it can sit inline.
fn inline_svg(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1320px;margin:2em auto;padding:0 1em;color:#1d2330;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:2px solid #dde3ee;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.86em}th,td{border:1px solid #c9d1df;padding:.25em .45em;text-align:left;vertical-align:top}
.scroll{max-width:100%;overflow-x:auto}.findings{font-size:1.05em;background:#f4f7fb;border:1px solid #dde3ee;border-radius:6px;padding:.6em 1em .6em 2em}.findings li{margin:.35em 0}
.thumbs{display:flex;flex-wrap:wrap;gap:.8em}.thumbs figure{margin:0;max-width:300px}
th{background:#eef2f8}caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
.warn{background:#fff4d6;border-left:4px solid #e0a800;padding:.5em .8em;margin:.8em 0}
.verdict{border-radius:6px;padding:.6em .9em;margin:.8em 0}.flag{background:#fde2e1;border-left:5px solid #c62828}
.ok{background:#e3f4e6;border-left:5px solid #2e7d32}.sus{background:#fff4d6;border-left:5px solid #e0a800}figure{margin:1em 0}figcaption{font-size:.9em;color:#4a5568}
img{max-width:100%;image-rendering:auto}nav a{margin-right:1em}dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}
dt{font-weight:600}dd{margin:0}svg{max-width:100%;height:auto}figure svg{max-width:640px}
"#;

impl Report {
    /// Renders the whole report as one HTML document.
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
            esc(&self.title),
            esc(&self.title)
        );
        if !self.findings.is_empty() {
            h.push_str("<h2 id=\"findings\">What was found</h2>\n<ul class=\"findings\">");
            for f in &self.findings {
                let _ = write!(h, "<li>{}</li>", esc(f));
            }
            h.push_str("</ul>\n");
        }
        h.push_str("<nav>");
        for s in &self.sections {
            let _ = write!(h, "<a href=\"#{}\">{}</a>", esc(&s.id), esc(&s.title));
        }
        h.push_str("</nav>\n<h2 id=\"run\">What was run</h2>\n<dl>");
        for (k, v) in &self.run_facts {
            let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
        }
        h.push_str("</dl>\n");
        for s in &self.sections {
            let _ = write!(h, "<h2 id=\"{}\">{}</h2>\n", esc(&s.id), esc(&s.title));
            let mut in_thumbs = false;
            for b in &s.blocks {
                let thumb = matches!(b, Block::Thumbnail { .. });
                if thumb && !in_thumbs {
                    h.push_str("<div class=\"thumbs\">");
                } else if !thumb && in_thumbs {
                    h.push_str("</div>\n");
                }
                in_thumbs = thumb;
                render_block(&mut h, b);
            }
            if in_thumbs {
                h.push_str("</div>\n");
            }
        }
        h.push_str("</body></html>\n");
        h
    }
}

fn render_block(h: &mut String, b: &Block) {
    match b {
        Block::Paragraph(t) => {
            let _ = writeln!(h, "<p>{}</p>", esc(t));
        }
        Block::Warning(t) => {
            let _ = writeln!(h, "<div class=\"warn\">{}</div>", esc(t));
        }
        Block::Table {
            caption,
            header,
            rows,
        } => {
            let _ = write!(
                h,
                "<div class=\"scroll\"><table><caption>{}</caption><thead><tr>",
                esc(caption)
            );
            for c in header {
                let _ = write!(h, "<th>{}</th>", esc(c));
            }
            h.push_str("</tr></thead><tbody>");
            for r in rows {
                h.push_str("<tr>");
                for c in r {
                    let _ = write!(h, "<td>{}</td>", esc(c));
                }
                h.push_str("</tr>");
            }
            h.push_str("</tbody></table></div>\n");
        }
        Block::Html(markup) => {
            h.push_str("<div class=\"scroll\">");
            h.push_str(markup);
            h.push_str("</div>\n");
        }
        Block::Svg { caption, svg } => {
            let _ = writeln!(
                h,
                "<figure>{}<figcaption>{}</figcaption></figure>",
                inline_svg(svg),
                esc(caption)
            );
        }
        Block::Thumbnail {
            caption,
            bytes,
            href,
        } => {
            let data = base64::engine::general_purpose::STANDARD.encode(bytes);
            // JPEG by its magic number (the segmenter's photographic overlays), PNG otherwise.
            let mime = if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
                "image/jpeg"
            } else {
                "image/png"
            };
            let _ = writeln!(
                h,
                "<figure><a href=\"{}\"><img alt=\"{}\" src=\"data:{mime};base64,{data}\"></a><figcaption>{} \
                 (<a href=\"{}\">full size</a>)</figcaption></figure>",
                esc(href),
                esc(caption),
                esc(caption),
                esc(href)
            );
        }
        Block::Verdict {
            model,
            flagged,
            suspicious,
            summary,
            evidence,
        } => {
            let class = if *flagged {
                "flag"
            } else if *suspicious {
                "sus"
            } else {
                "ok"
            };
            let _ = write!(
                h,
                "<div class=\"verdict {class}\"><strong>Audit of {}: {}</strong><ul>",
                esc(model),
                esc(summary)
            );
            for e in evidence {
                let _ = write!(h, "<li>{}</li>", esc(e));
            }
            h.push_str("</ul></div>\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_self_contained_and_escaped() {
        let report = Report {
            title: "Study <1>".into(),
            findings: vec!["Figure 4 <split 1>: ours 0.41".into()],
            run_facts: vec![("weights".into(), "random initialisation — no ImageNet weights supplied".into())],
            sections: vec![Section {
                id: "fig4".into(),
                title: "Figure 4".into(),
                blocks: vec![
                    Block::Table {
                        caption: "AUC".into(),
                        header: vec!["set".into(), "ours".into(), "paper".into()],
                        rows: vec![vec!["seen".into(), "0.99 [0.97, 1.00]".into(), "1.00".into()]],
                    },
                    Block::Svg {
                        caption: "ROC".into(),
                        svg: "<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"></svg>".into(),
                    },
                    Block::Thumbnail {
                        caption: "gallery".into(),
                        bytes: vec![0x89, b'P', b'N', b'G'],
                        href: "experiments/x/gallery/a b.png".into(),
                    },
                    Block::Thumbnail {
                        caption: "overlay".into(),
                        bytes: vec![0xFF, 0xD8, 0xFF],
                        href: "unet/unet.worst/01.png".into(),
                    },
                    Block::Verdict {
                        model: "resnet50".into(),
                        flagged: true,
                        suspicious: false,
                        summary: "shortcut found (raised by the source probe)".into(),
                        evidence: vec!["source AUC 0.99 > 0.9".into()],
                    },
                ],
            }],
        };
        let html = report.to_html();
        assert!(html.contains("Study &lt;1&gt;"));
        assert!(
            !html.contains("<?xml"),
            "prolog must be stripped for inline SVG"
        );
        assert!(html.contains("data:image/png;base64,iVBORw=="));
        // A JPEG preview is labelled as one.
        assert!(html.contains("data:image/jpeg;base64,/9j/"));
        assert!(html.contains("<a href=\"experiments/x/gallery/a b.png\">full size</a>"));
        assert!(html.contains("Audit of resnet50: shortcut found (raised by the source probe)"));
        // The findings come first, before what was run and the sections.
        let found = html.find("Figure 4 &lt;split 1&gt;: ours 0.41").unwrap();
        assert!(found < html.find("What was run").unwrap());
        assert!(html.contains("0.99 [0.97, 1.00]"));
        // No external resources: nothing fetched from the network.
        assert!(
            !html.contains("http://")
                || html.matches("http://").count()
                    == html.matches("xmlns=\"http://www.w3.org").count()
        );
        assert!(!html.contains("https://") && !html.contains("<script"));
    }
}
