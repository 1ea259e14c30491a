//! Output of a workload: a progress bar while it runs, a table at the end, `--json` with
//! every figure and parameter, `--plot` with a latency histogram and throughput over time.

use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

/// A progress bar on stderr: `len` steps, or a spinner when the length is unknown.
pub fn bar(len: Option<u64>, label: &str) -> ProgressBar {
    let pb = match len {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = if len.is_some() {
        "{prefix:>22} [{bar:30}] {pos}/{len} {per_sec} {elapsed_precise} {msg}"
    } else {
        "{prefix:>22} {spinner} {pos} {per_sec} {elapsed_precise} {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(label.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Percentiles of a latency histogram (recorded in microseconds).
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p95_us: h.value_at_quantile(0.95),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "count": self.count,
            "p50_us": self.p50_us,
            "p95_us": self.p95_us,
            "p99_us": self.p99_us,
            "max_us": self.max_us,
            "mean_us": (self.mean_us * 10.0).round() / 10.0,
        })
    }
}

/// Microseconds as milliseconds for a table cell.
pub fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

pub fn rate(per_s: f64) -> String {
    format!("{per_s:.0}/s")
}

/// A text table with a title and aligned columns.
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: impl Into<String>, columns: &[&str]) -> Table {
        Table {
            title: title.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let mut width: Vec<usize> = self.columns.iter().map(|c| c.len()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < width.len() {
                    width[i] = width[i].max(c.chars().count());
                }
            }
        }
        let line = |cells: &[String]| -> String {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let w = width.get(i).copied().unwrap_or(0);
                    if i == 0 {
                        format!("{c:<w$}")
                    } else {
                        format!("{c:>w$}")
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        println!("\n{}", self.title);
        println!("{}", line(&self.columns));
        println!(
            "{}",
            width
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("  ")
        );
        for r in &self.rows {
            println!("{}", line(r));
        }
    }
}

/// Writes `value` as pretty JSON.
pub fn write_json(path: &Path, value: &Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| format!("cannot encode the results as JSON: {e}"))?;
    std::fs::write(path, text + "\n")
        .map_err(|e| format!("cannot write --json {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// One measured series for the chart.
pub struct Series<'a> {
    pub label: String,
    pub latency: &'a Histogram<u64>,
    /// (seconds since start, acknowledged messages/s)
    pub throughput: &'a [(f64, f64)],
}

/// Writes an SVG: the latency histogram of each series (share of messages per bin, drawn
/// as steps so several series stay readable on one chart) above their throughput over time.
pub fn plot(path: &Path, title: &str, series: &[Series<'_>]) -> Result<(), String> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| format!("cannot draw --plot {}: {e}", path.display());

    // Bins from 0 to the largest p99.9, so one outlier does not squash the picture.
    let x_max_us = series
        .iter()
        .filter(|s| !s.latency.is_empty())
        .map(|s| s.latency.value_at_quantile(0.999))
        .max()
        .unwrap_or(1000)
        .max(10) as f64
        * 1.1;
    const BINS: usize = 80;
    let bin = x_max_us / BINS as f64;
    let hist_points: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            let total = s.latency.len().max(1) as f64;
            let mut pts = Vec::with_capacity(BINS * 2);
            for i in 0..BINS {
                let lo = i as f64 * bin;
                let hi = lo + bin;
                let n = s
                    .latency
                    .count_between(lo as u64, (hi as u64).saturating_sub(1));
                let share = 100.0 * n as f64 / total;
                pts.push((lo / 1000.0, share));
                pts.push((hi / 1000.0, share));
            }
            pts
        })
        .collect();
    let y_max = hist_points
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(1.0f64, f64::max)
        * 1.1;
    let t_max = series
        .iter()
        .flat_map(|s| s.throughput.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let r_max = series
        .iter()
        .flat_map(|s| s.throughput.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;

    let root = SVGBackend::new(path, (1100, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| err(&e))?;
    let (upper, lower) = root.split_vertically(450);

    let mut chart = ChartBuilder::on(&upper)
        .caption(
            "End-to-end latency (send call to receipt)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max_us / 1000.0, 0f64..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("latency (ms)")
        .y_desc("messages per bin (%)")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (s, pts)) in series.iter().zip(&hist_points).enumerate() {
        let color = color(i);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;

    let mut chart = ChartBuilder::on(&lower)
        .caption(
            "Acknowledged messages per second (100 ms buckets)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max, 0f64..r_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("msgs/s")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, s) in series.iter().enumerate() {
        let color = color(i);
        chart
            .draw_series(LineSeries::new(
                s.throughput.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Distinct, readable line colours (the usual categorical palette).
fn color(i: usize) -> plotters::style::RGBAColor {
    use plotters::style::{Color, RGBColor};
    const COLORS: [RGBColor; 6] = [
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(0, 0, 0),
    ];
    COLORS[i % COLORS.len()].to_rgba()
}
