//! The figures made from the stored results (SVG, `bench/figures/`): what a
//! reader takes in at a glance beside the tables. Drawn with plotters'
//! SVG backend, which writes text as SVG text (no font files needed) and
//! the same bytes for the same results.
use std::ops::Range;

use anyhow::anyhow;
use plotters::{
    coord::{types::RangedCoordf64, Shift},
    prelude::*,
};
use serde_json::Value;

use super::results::{b1_row, b2_pps, b5_per_second, distinct, num, text, Results, B2_VARIANTS};

/// One figure: its file name under `bench/figures/`, what it shows (the
/// alt text), and its SVG.
pub struct Figure {
    pub file: &'static str,
    pub alt: &'static str,
    pub svg: String,
}

/// Every figure the stored results allow.
pub fn all(results: &Results) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    if let Some(doc) = results.get("b1") {
        figures.push(Figure { file: "b1.svg", alt: "B1: ns above the empty program per case", svg: b1(doc)? });
    }
    if let Some(doc) = results.get("b2") {
        figures.push(Figure {
            file: "b2.svg",
            alt: "B2: packets per second against the number of rules",
            svg: b2(doc)?,
        });
    }
    if let Some(doc) = results.get("b5") {
        figures.push(Figure {
            file: "b5.svg",
            alt: "B5: new flows admitted each second of a SYN flood",
            svg: b5(doc)?,
        });
    }
    Ok(figures)
}

const SIZE: (u32, u32) = (1000, 420);
const FONT: &str = "sans-serif";

/// One line of a chart: its name in the legend and its points.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// An x axis: its range and how a position is labelled (categories sit
/// at 0, 1, 2, …; other positions get no label).
struct XAxis<'a> {
    desc: &'a str,
    range: Range<f64>,
    labels: Vec<String>,
}

impl XAxis<'_> {
    fn label(&self, x: f64) -> String {
        if (x - x.round()).abs() > 1e-9 || x < 0.0 {
            return String::new();
        }
        self.labels.get(x.round() as usize).cloned().unwrap_or_default()
    }
}

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing a figure: {e}")
}

/// Draws into an SVG string of `SIZE`, split into `panels` side by side.
fn svg(
    panels: usize,
    draw: impl FnOnce(&[DrawingArea<SVGBackend<'_>, Shift>]) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let areas = root.split_evenly((1, panels));
        draw(&areas)?;
        root.present().map_err(plot_err)?;
    }
    Ok(out)
}

fn color(i: usize) -> RGBColor {
    // Distinguishable for the common forms of colour blindness (Okabe-Ito).
    const COLORS: [RGBColor; 6] = [
        RGBColor(0, 114, 178),
        RGBColor(213, 94, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(86, 180, 233),
        RGBColor(230, 159, 0),
    ];
    COLORS[i % COLORS.len()]
}

fn y_max(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.filter(|v| v.is_finite()).fold(0.0, f64::max);
    if max > 0.0 {
        max * 1.15
    } else {
        1.0
    }
}

/// A line chart with a point at each value and a legend.
fn lines(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    x: &XAxis<'_>,
    y_desc: &str,
    series: &[Series],
) -> anyhow::Result<()> {
    let top = y_max(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 17))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x.range.clone(), 0.0..top)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc(x.desc)
        .y_desc(y_desc)
        .x_labels(x.labels.len().max(2) * 2 + 1)
        .x_label_formatter(&|v| x.label(*v))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .disable_x_mesh()
        .draw()
        .map_err(plot_err)?;
    for (i, s) in series.iter().enumerate() {
        let c = color(i);
        let points: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| p.1.is_finite()).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
            .map_err(plot_err)?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, c.filled()))).map_err(plot_err)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerLeft)
}

/// A chart of these figures: f64 on both axes, drawn as SVG.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The legend of the series drawn, boxed, at `position`.
fn legend<'b>(chart: &mut Chart<'b, 'b>, position: SeriesLabelPosition) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(plot_err)
}

/// B1: ns above the floor (the empty program) of each case, per policy,
/// as grouped bars; one panel per address family.
fn b1(doc: &Value) -> anyhow::Result<String> {
    let rows = doc["results"].as_array().map_or(&[][..], Vec::as_slice);
    let policies = distinct(rows, "policy");
    let cases = ["tracked flow", "dropped packet", "new flow"];
    let above = |p: &str, f: &str, c: &str| b1_row(rows, p, f, c).map_or(f64::NAN, |r| num(&r["above_floor_ns"]));
    let top = y_max(rows.iter().map(|r| num(&r["above_floor_ns"])));
    let x = XAxis {
        desc: "policy",
        range: -0.5..policies.len() as f64 - 0.5,
        labels: policies.iter().map(|p| (*p).to_owned()).collect(),
    };
    svg(2, |areas| {
        for (area, family) in areas.iter().zip(["IPv4", "IPv6"]) {
            let mut chart = ChartBuilder::on(area)
                .caption(format!("B1 {family}: ns per packet above the empty program"), (FONT, 17))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(56)
                .build_cartesian_2d(x.range.clone(), 0.0..top)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc(x.desc)
                .y_desc("ns above the floor")
                .x_labels(policies.len() * 2 + 1)
                .x_label_formatter(&|v| x.label(*v))
                .x_label_style((FONT, 11))
                .y_label_formatter(&|v| format!("{v:.0}"))
                .disable_x_mesh()
                .draw()
                .map_err(plot_err)?;
            let width = 0.8 / cases.len() as f64;
            for (c, case) in cases.iter().enumerate() {
                let fill = color(c).filled();
                let bars = policies.iter().enumerate().filter_map(|(i, p)| {
                    let value = above(p, family, case);
                    let left = i as f64 - 0.4 + c as f64 * width;
                    value.is_finite().then(|| Rectangle::new([(left, 0.0), (left + width * 0.9, value)], fill))
                });
                chart
                    .draw_series(bars)
                    .map_err(plot_err)?
                    .label(*case)
                    .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], fill));
            }
            legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        }
        Ok(())
    })
}

/// B2: thousand packets per second at the receiver against the number of
/// rules, one line per filter; the dropped flood and the allowed one.
fn b2(doc: &Value) -> anyhow::Result<String> {
    let rows = doc["results"].as_array().map_or(&[][..], Vec::as_slice);
    let sizes = distinct(rows, "rules");
    let x = XAxis {
        desc: "rules",
        range: -0.25..sizes.len() as f64 - 0.75,
        labels: sizes.iter().map(|s| (*s).to_owned()).collect(),
    };
    svg(2, |areas| {
        for (area, (flood, title)) in areas
            .iter()
            .zip([("dropped", "B2: a flood no rule allows"), ("allowed", "B2: a flood the last rule allows")])
        {
            let series: Vec<Series> = B2_VARIANTS
                .iter()
                .map(|v| Series {
                    name: (*v).to_owned(),
                    points: sizes
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (i as f64, b2_pps(rows, flood, s, v) / 1e3))
                        .collect(),
                })
                .collect();
            lines(area, title, &x, "thousand packets per second", &series)?;
        }
        Ok(())
    })
}

/// B5: new flows admitted in each second of the flood, one line per
/// tracker; beside it, when the run had one, the legitimate client's
/// connections completed each second.
fn b5(doc: &Value) -> anyhow::Result<String> {
    let trackers = doc["results"].as_array().map_or(&[][..], Vec::as_slice);
    let per_second = |key: &str| -> Vec<Series> {
        trackers
            .iter()
            .map(|t| Series {
                name: text(&t["variant"]).to_owned(),
                points: b5_per_second(t, key).into_iter().enumerate().map(|(s, v)| (s as f64, v)).collect(),
            })
            .collect()
    };
    let admitted = per_second("admitted_per_second");
    let client = per_second("client_completed_per_second");
    let with_client = client.iter().any(|s| !s.points.is_empty());
    let seconds = admitted.iter().map(|s| s.points.len()).max().unwrap_or(0);
    let x = XAxis {
        desc: "second of the flood",
        range: -0.25..seconds as f64 - 0.75,
        labels: (1..=seconds).map(|s| s.to_string()).collect(),
    };
    svg(if with_client { 2 } else { 1 }, |areas| {
        lines(&areas[0], "B5: new flows admitted through a SYN flood", &x, "new flows per second", &admitted)?;
        if with_client {
            lines(&areas[1], "B5: a legitimate client's connections completed", &x, "connections per second", &client)?;
        }
        Ok(())
    })
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]
mod tests {
    use serde_json::json;

    use super::*;

    /// B5 as the run with a legitimate client beside the flood writes it.
    fn b5_with_client() -> Value {
        let run = |admitted: [f64; 3], completed: [u64; 3]| {
            json!({"admitted_per_second": admitted, "refused_per_second": [0.0, 0.0, 9.0], "entries_at_end": 9,
                   "gbps_before": 1.0, "gbps_during": 1.0, "survived": true,
                   "client_attempted_per_second": [100, 100, 100], "client_completed_per_second": completed})
        };
        json!({"benchmark": "b5", "table_size": 9, "results": [
            {"variant": "sgctl (tcx)", "runs": [run([5.0, 4.0, 0.0], [100, 99, 98])]},
            {"variant": "nf_conntrack (nftables export)", "runs": [run([3.0, 3.0, 3.0], [100, 50, 10])]},
        ]})
    }

    #[test]
    fn b5_draws_the_legitimate_client_beside_the_flood_when_the_run_had_one() {
        let svg = b5(&b5_with_client()).unwrap();
        assert!(svg.contains("new flows admitted through a SYN flood"));
        assert!(svg.contains("a legitimate client&apos;s connections completed") || svg.contains("legitimate client"));
        let mut without = b5_with_client();
        for tracker in without["results"].as_array_mut().unwrap() {
            for run in tracker["runs"].as_array_mut().unwrap() {
                run.as_object_mut().unwrap().retain(|k, _| !k.starts_with("client_"));
            }
        }
        assert!(!b5(&without).unwrap().contains("legitimate client"));
    }

    #[test]
    fn the_same_results_draw_the_same_bytes() {
        assert_eq!(b5(&b5_with_client()).unwrap(), b5(&b5_with_client()).unwrap());
    }
}
