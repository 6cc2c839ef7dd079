//! Latency percentile plots: several runs' HdrHistogram percentile files
//! overlaid in one SVG, on the usual axes (percentile on a log scale of
//! 1/(1-p), latency on a log scale).
//!
//! The SVG is written directly: a chart plotting crate would bring system
//! font libraries in just to measure axis labels.

use std::fmt::Write as _;

/// One run: its label and `(percentile 0..1, latency µs)` points.
pub type Series = (String, Vec<(f64, f64)>);

/// Reads a percentile file written by `--hgrm`.
#[must_use]
pub fn parse_hgrm(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let value: f64 = cols.next()?.parse().ok()?;
            let percentile: f64 = cols.next()?.parse().ok()?;
            Some((percentile, value))
        })
        .collect()
}

const W: f64 = 900.0;
const H: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 60.0;
/// The x axis ends at 99.9999% (1/(1-p) = 10^6).
const MAX_NINES: f64 = 6.0;
const COLOURS: [&str; 6] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

fn x_of(p: f64) -> f64 {
    let nines = (1.0 / (1.0 - p.min(1.0 - 1e-9))).log10().clamp(0.0, MAX_NINES);
    LEFT + nines / MAX_NINES * (W - LEFT - RIGHT)
}

/// The plot of `series` as an SVG document.
#[must_use]
pub fn svg(title: &str, series: &[Series]) -> String {
    let values = series.iter().flat_map(|(_, pts)| pts.iter().map(|(_, v)| *v)).filter(|v| *v > 0.0);
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo > hi { (1.0, 10.0) } else { (10f64.powf(lo.log10().floor()), 10f64.powf(hi.log10().ceil())) };
    let (lo_log, span) = (lo.log10(), (hi.log10() - lo.log10()).max(1.0));
    let y_of = |v: f64| TOP + (1.0 - (v.max(lo).log10() - lo_log) / span) * (H - TOP - BOTTOM);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="{}" y="18" font-size="14" text-anchor="middle">{}</text>"#, W / 2.0, escape(title));
    // Axes, grid and ticks.
    for (p, label) in [
        (0.0, "0%"),
        (0.9, "90%"),
        (0.99, "99%"),
        (0.999, "99.9%"),
        (0.9999, "99.99%"),
        (0.99999, "99.999%"),
        (0.999_999, "99.9999%"),
    ] {
        let x = x_of(p);
        let _ = writeln!(s, r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##, H - BOTTOM);
        let _ = writeln!(s, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#, H - BOTTOM + 16.0);
    }
    let mut decade = lo;
    while decade <= hi * 1.0001 {
        let y = y_of(decade);
        let _ = writeln!(s, r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##, W - RIGHT);
        let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#, LEFT - 6.0, y + 4.0, decade);
        decade *= 10.0;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 20.0
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="{:.1}" transform="rotate(-90 20 {:.1})" text-anchor="middle">latency (µs)</text>"#,
        (TOP + H - BOTTOM) / 2.0,
        (TOP + H - BOTTOM) / 2.0
    );
    // One polyline per run, and its legend entry.
    for (i, (label, pts)) in series.iter().enumerate() {
        let colour = COLOURS.get(i % COLOURS.len()).copied().unwrap_or("black");
        let points: Vec<String> =
            pts.iter().filter(|(p, _)| *p < 1.0).map(|(p, v)| format!("{:.1},{:.1}", x_of(*p), y_of(*v))).collect();
        let _ =
            writeln!(s, r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#, points.join(" "));
        let ly = TOP + 20.0 + 20.0 * i as f64;
        let lx = W - RIGHT + 15.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="3"/>"#,
            lx + 25.0
        );
        let _ = writeln!(s, r#"<text x="{}" y="{}">{}</text>"#, lx + 32.0, ly + 4.0, escape(label));
    }
    s.push_str("</svg>\n");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{histogram, percentile_file};

    #[test]
    fn plots_every_series_from_percentile_files() {
        let mut a = histogram();
        let mut b = histogram();
        for i in 1..=10_000u64 {
            a.record(20_000 + i).unwrap();
            b.record(40_000 + 10 * i).unwrap();
        }
        let pa = parse_hgrm(&percentile_file(&a));
        assert!(pa.len() > 10);
        assert!(pa.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1), "monotone");
        let svg = svg("pairs <100B>", &[("ip2p".into(), pa), ("coturn".into(), parse_hgrm(&percentile_file(&b)))]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">ip2p<") && svg.contains(">coturn<"));
        assert!(svg.contains("pairs &lt;100B&gt;"));
        assert!(svg.contains(">99.9%<"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }

    #[test]
    fn axes_cover_the_data() {
        assert!((x_of(0.0) - LEFT).abs() < 1e-9);
        assert!((x_of(0.999_999) - (W - RIGHT)).abs() < 1e-6);
        assert!(x_of(0.9) < x_of(0.99));
        let empty = svg("nothing", &[]);
        assert!(empty.contains("</svg>"));
    }
}
