//! The one chart engine, plotters drawing into an SVG, and its two charts:
//!
//! - [`scaling`] (`make bench-compare`): one column per scenario, msgs/s on
//!   top and server CPU µs per message below, against the server's core
//!   count, one line per server so that reactor-echo and its peers are seen
//!   side by side;
//! - [`bars`] (`make bench`): one panel per figure (msgs/s, CPU µs per
//!   message, syscalls per message, one bar per scenario) and the RSS of the
//!   idle connections;
//! - [`latency`] (`make bench-latency`): one panel per percentile (p50,
//!   p99, p99.9, max), latency on a log scale against the offered load as
//!   a share of each server's maximum, one line per server.

use plotters::prelude::*;

use crate::host::thousands;
use crate::report::{Results, Summary, summarize};
use crate::run::Outcome;

const PANEL_W: u32 = 330;
const PANEL_H: u32 = 290;
const HEADER_H: u32 = 78;

/// Line colours, in server order: reactor-echo first, in red.
const COLOURS: [RGBColor; 7] = [
    RGBColor(204, 37, 41),
    RGBColor(57, 106, 177),
    RGBColor(62, 150, 81),
    RGBColor(107, 76, 154),
    RGBColor(218, 124, 48),
    RGBColor(146, 36, 40),
    RGBColor(83, 81, 84),
];

/// A short axis label: 1.5M, 150K, 2.4.
fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}K", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.1}K", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A latency axis label from µs: 250µs, 2.5ms, 1.2s.
fn us_label(us: f64) -> String {
    let trim = |v: f64| {
        if v >= 10.0 || (v - v.round()).abs() < 0.05 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    };
    if us >= 1e6 {
        format!("{}s", trim(us / 1e6))
    } else if us >= 1e3 {
        format!("{}ms", trim(us / 1e3))
    } else {
        format!("{}µs", trim(us))
    }
}

/// Draws `size` pixels with `draw` into an SVG.
fn render(size: (u32, u32), draw: impl FnOnce(&Area<'_>) -> DrawResult) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| format!("chart: {e}"))?;
        draw(&root).map_err(|e| format!("chart: {e}"))?;
        root.present().map_err(|e| format!("chart: {e}"))?;
    }
    Ok(out)
}

/// The scaling chart. `shared` holds the core counts whose server CPUs the
/// load generators share (marked with `*`); `title` heads it.
pub fn scaling(r: &Results, shared: &[usize], title: &str) -> Result<String, String> {
    let size = (PANEL_W * r.scenarios.len() as u32, HEADER_H + 2 * PANEL_H);
    render(size, |root| draw_scaling(root, r, shared, title))
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn draw_scaling(root: &Area<'_>, r: &Results, shared: &[usize], title: &str) -> DrawResult {
    let (header, body) = root.split_vertically(HEADER_H);
    let note = if shared.is_empty() {
        "x: server cores (log scale). Median of the rounds."
    } else {
        "x: server cores (log scale). Median of the rounds. *: the server shares a CPU with the load generator."
    };
    legend(&header, &r.servers, title, note)?;

    let panels = body.split_evenly((2, r.scenarios.len()));
    // x: log2 of the core count, in hundredths (integer coordinates, whose
    // key points plotters can label; f64 ones it will not).
    let logs: Vec<i32> = r
        .counts
        .iter()
        .map(|&n| ((n as f64).log2() * 100.0).round() as i32)
        .collect();
    let lo = logs.iter().copied().min().unwrap_or(0);
    let hi = logs.iter().copied().max().unwrap_or(0);
    let pad = if hi > lo { (hi - lo) * 12 / 100 } else { 50 };
    let label = |v: &i32| {
        let n = (f64::from(*v) / 100.0).exp2().round() as usize;
        if shared.contains(&n) {
            format!("{n}*")
        } else {
            n.to_string()
        }
    };
    for (row, metric) in ["msgs/s", "server CPU µs/msg"].iter().enumerate() {
        for (k, sc) in r.scenarios.iter().enumerate() {
            let area = &panels[row * r.scenarios.len() + k];
            // Each server's points: (log2 cores, value), failed cells left out.
            let lines: Vec<Vec<(i32, f64)>> = (0..r.servers.len())
                .map(|s| {
                    (0..r.counts.len())
                        .filter_map(|c| {
                            let x = r.summary(s, c, k)?;
                            let v = if row == 0 {
                                x.msgs_per_s
                            } else {
                                x.cpu_us_per_msg
                            };
                            Some((logs[c], v))
                        })
                        .collect()
                })
                .collect();
            let top = lines
                .iter()
                .flatten()
                .map(|p| p.1)
                .fold(0.0, f64::max)
                .max(f64::MIN_POSITIVE)
                * 1.15;
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{}: {metric}", sc.key), ("sans-serif", 15))
                .margin(8)
                .x_label_area_size(34)
                .y_label_area_size(52)
                .build_cartesian_2d(
                    ((lo - pad)..(hi + pad)).with_key_points(logs.clone()),
                    0.0..top,
                )?;
            chart
                .configure_mesh()
                .x_desc("server cores")
                .x_label_formatter(&label)
                .y_label_formatter(&|v| short(*v))
                .max_light_lines(1)
                .light_line_style(RGBColor(240, 240, 240))
                .draw()?;
            for (s, points) in lines.iter().enumerate() {
                let colour = COLOURS[s % COLOURS.len()];
                let width = if s == 0 { 3 } else { 2 };
                chart.draw_series(LineSeries::new(
                    points.iter().copied(),
                    colour.stroke_width(width),
                ))?;
                chart.draw_series(
                    points
                        .iter()
                        .map(|&p| Circle::new(p, width + 1, colour.filled())),
                )?;
            }
        }
    }
    Ok(())
}

/// A percentile of the latency chart: its name and where to read it.
type Figure = (&'static str, fn(&Summary) -> f64);

/// The latency chart of `make bench-latency`, headed by `title`.
pub fn latency(out: &Outcome, title: &str) -> Result<String, String> {
    let lat = out.latency.as_ref().ok_or("no open-loop rounds")?;
    let r = &out.results;
    // Each server's medians at each load, failed loads left out.
    let points: Vec<Vec<(i32, Summary)>> = (0..r.servers.len())
        .map(|s| {
            lat.levels
                .iter()
                .enumerate()
                .filter_map(|(j, l)| {
                    Some(((l * 100.0).round() as i32, summarize(&lat.open[s][j])?))
                })
                .collect()
        })
        .collect();
    let figures: [Figure; 4] = [
        ("p50", |x| x.p50_us),
        ("p99", |x| x.p99_us),
        ("p99.9", |x| x.p999_us),
        ("max", |x| x.max_us),
    ];
    let keys: Vec<i32> = lat
        .levels
        .iter()
        .map(|l| (l * 100.0).round() as i32)
        .collect();
    let size = (PANEL_W * figures.len() as u32, HEADER_H + PANEL_H + 20);
    render(size, |root| {
        let (header, body) = root.split_vertically(HEADER_H);
        legend(
            &header,
            &r.servers,
            title,
            "x: offered load, % of each server's own closed-loop maximum. y: µs from each line's intended send time (log scale). Median of the rounds.",
        )?;
        let panels = body.split_evenly((1, figures.len()));
        let (lo, hi) = (
            keys.iter().copied().min().unwrap_or(0) - 5,
            keys.iter().copied().max().unwrap_or(100) + 5,
        );
        for (panel, (name, f)) in panels.iter().zip(figures) {
            let values = points.iter().flatten().map(|p| f(&p.1));
            let (min, max) = values.fold((f64::MAX, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
            let (min, max) = if max > 0.0 {
                (min.max(0.1) / 1.5, max * 1.5)
            } else {
                (1.0, 10.0)
            };
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("{name} latency, µs"), ("sans-serif", 15))
                .margin(8)
                .x_label_area_size(34)
                .y_label_area_size(52)
                .build_cartesian_2d(
                    (lo..hi).with_key_points(keys.clone()),
                    (min..max).log_scale(),
                )?;
            chart
                .configure_mesh()
                .x_desc("offered load, % of max")
                .x_label_formatter(&|v| format!("{v}%"))
                .y_label_formatter(&|v| us_label(*v))
                .light_line_style(RGBColor(240, 240, 240))
                .draw()?;
            for (s, line) in points.iter().enumerate() {
                let colour = COLOURS[s % COLOURS.len()];
                let width = if s == 0 { 3 } else { 2 };
                let xy: Vec<(i32, f64)> = line.iter().map(|(x, v)| (*x, f(v))).collect();
                chart.draw_series(LineSeries::new(
                    xy.iter().copied(),
                    colour.stroke_width(width),
                ))?;
                chart.draw_series(
                    xy.iter()
                        .map(|&p| Circle::new(p, width + 1, colour.filled())),
                )?;
            }
        }
        Ok(())
    })
}

/// The header of a line chart: its title, a note, one swatch per server.
fn legend(header: &Area<'_>, servers: &[String], title: &str, note: &str) -> DrawResult {
    header.draw(&Text::new(
        title.to_string(),
        (12, 8),
        ("sans-serif", 17).into_font().color(&BLACK),
    ))?;
    header.draw(&Text::new(
        note.to_string(),
        (12, 30),
        ("sans-serif", 13).into_font().color(&RGBColor(80, 80, 80)),
    ))?;
    let mut x = 12;
    for (s, name) in servers.iter().enumerate() {
        let colour = COLOURS[s % COLOURS.len()];
        header.draw(&PathElement::new(
            vec![(x, 60), (x + 24, 60)],
            colour.stroke_width(if s == 0 { 4 } else { 2 }),
        ))?;
        header.draw(&Circle::new((x + 12, 60), 4, colour.filled()))?;
        header.draw(&Text::new(
            name.clone(),
            (x + 30, 53),
            ("sans-serif", 14).into_font().color(&BLACK),
        ))?;
        x += 40 + 8 * name.chars().count() as i32 + 24;
    }
    Ok(())
}

/// One panel of [`bars`]: its title and its bars (label, value, value as
/// text).
type Panel = (&'static str, Vec<(String, f64, String)>);

const BAR_ROW: u32 = 26;
const BAR_LABEL_W: u32 = 290;

/// `make bench`'s chart: a panel of bars per figure of reactor-echo alone.
pub fn bars(out: &Outcome) -> Result<String, String> {
    let r = &out.results;
    let per_scenario = |f: &dyn Fn(&crate::report::Summary) -> (f64, String)| {
        let rows = r.scenarios.iter().enumerate();
        rows.filter_map(|(k, sc)| {
            let (v, text) = f(&r.summary(0, 0, k)?);
            Some((sc.title.to_string(), v, text))
        })
        .collect::<Vec<_>>()
    };
    let mut panels: Vec<Panel> = vec![
        (
            "messages per second",
            per_scenario(&|m| (m.msgs_per_s, thousands(m.msgs_per_s))),
        ),
        (
            "server CPU µs per message",
            per_scenario(&|m| (m.cpu_us_per_msg, format!("{:.2}", m.cpu_us_per_msg))),
        ),
        (
            "server syscalls per message",
            per_scenario(&|m| {
                let v = m.syscalls.map_or(0.0, |s| s.total());
                (v, format!("{v:.3}"))
            }),
        ),
    ];
    if let Some(idle) = &out.idle {
        let mib = idle.rss_kib / 1024.0;
        let label = format!("{} idle connections", thousands(idle.conns as f64));
        panels.push(("server RSS MiB", vec![(label, mib, format!("{mib:.1}"))]));
    }
    let heights: Vec<u32> = panels
        .iter()
        .map(|p| 56 + BAR_ROW * p.1.len() as u32)
        .collect();
    render(
        (BAR_LABEL_W + 460, heights.iter().sum::<u32>() + 10),
        |root| {
            let mut area = root.margin(10, 0, 10, 10);
            for (panel, h) in panels.iter().zip(&heights) {
                let (top, rest) = area.split_vertically(*h);
                draw_bars(&top, panel)?;
                area = rest;
            }
            Ok(())
        },
    )
}

/// One panel: horizontal bars, a row per label, the value written after
/// each bar. y: hundredths of a row, so that plotters labels row centres.
fn draw_bars(area: &Area<'_>, (title, rows): &Panel) -> DrawResult {
    let n = rows.len() as i32;
    let max = rows
        .iter()
        .map(|r| r.1)
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let centres: Vec<i32> = (0..n).map(|i| i * 100 + 50).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(*title, ("sans-serif", 15))
        .y_label_area_size(BAR_LABEL_W)
        .margin_right(20)
        .build_cartesian_2d(0.0..max * 1.25, (0..n * 100).with_key_points(centres))?;
    let label = |v: &i32| {
        // Top to bottom in the table's order.
        let row = (n - 1 - v / 100).clamp(0, n - 1) as usize;
        rows.get(row).map_or(String::new(), |r| r.0.clone())
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_y_mesh()
        .disable_x_axis()
        .y_label_formatter(&label)
        .draw()?;
    let colour = RGBColor(74, 127, 181);
    for (i, (_, v, text)) in rows.iter().enumerate() {
        let y = (n - 1 - i as i32) * 100;
        chart.draw_series([Rectangle::new(
            [(0.0, y + 18), (*v, y + 82)],
            colour.filled(),
        )])?;
        chart.draw_series([Text::new(
            text.clone(),
            (*v + max * 0.01, y + 75),
            ("sans-serif", 12),
        )])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Quiet;
    use crate::scenario::SCENARIOS;
    use crate::server::{Idle, Sample};

    #[test]
    fn draws_every_server() {
        let s = |m: f64| {
            Ok(Sample {
                msgs_per_s: m,
                cpu_us_per_msg: 5.0,
                ..Sample::default()
            })
        };
        let r = Results {
            servers: vec!["reactor-echo".into(), "tokio-multi".into()],
            counts: vec![1, 2],
            scenarios: SCENARIOS.iter().collect(),
            samples: vec![
                vec![vec![vec![s(100.0)]; 5], vec![vec![s(180.0)]; 5]],
                vec![vec![vec![s(90.0)]; 5], vec![vec![Err("x".into())]; 5]],
            ],
        };
        let svg = scaling(&r, &[2], "test").unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("tokio-multi"));
        assert!(svg.contains("2*"), "the shared count is marked");
        assert!(svg.contains("pipelined: msgs/s"));
        assert_eq!(short(1_460_000.0), "1.5M");
        assert_eq!(short(150_000.0), "150K");
        assert_eq!(short(6.49), "6.5");
        assert_eq!(
            [
                us_label(250.0),
                us_label(2500.0),
                us_label(20_000.0),
                us_label(1.2e6)
            ],
            ["250µs", "2.5ms", "20ms", "1.2s"]
        );
        let out = Outcome {
            results: r,
            quiet: Quiet::default(),
            raw: String::new(),
            idle: Some(Idle {
                conns: 10_000,
                echoed: 10_000,
                rss_kib: 4198.4,
                baseline_kib: 2662.4,
            }),
            latency: None,
        };
        let svg = bars(&out).unwrap();
        for text in [
            "messages per second",
            "server RSS MiB",
            "10,000 idle connections",
            "4.1",
            "100",
        ] {
            assert!(svg.contains(text), "{text} in {svg}");
        }
        assert!(
            svg.contains("pipelined, 50 conns"),
            "the scenario titles label the bars"
        );
    }
}
