//! The run's charts: latency and bandwidth against payload size, every system on one chart.
//!
//! SVG only, through plotters' SVG backend: text is written as `<text>` elements and laid out
//! with plotters' built-in estimate, so no system font is needed (the machine has none).
//!
//! - `latency.svg`: log-log, x = payload size (1KB … 16MB), y = round-trip latency in µs; per
//!   system a solid line through p50 with a whisker from p50 to p99 at each size, and a dashed
//!   line through the mean. Systems are nudged apart along x so their whiskers do not overlap.
//! - `bandwidth.svg`: x = payload size (log), y = round-trip bandwidth in GB/s (`2·size/avg`,
//!   decimal), one line per system.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::csv::CsvRow;
use super::plan::human_size;
use super::table::System;

/// Pixel size of each chart.
const CHART_SIZE: (u32, u32) = (1100, 700);
/// The latency chart's file name inside the output directory.
pub const LATENCY_SVG: &str = "latency.svg";
/// The bandwidth chart's file name inside the output directory.
pub const BANDWIDTH_SVG: &str = "bandwidth.svg";
/// Values on a log axis must be positive; anything smaller is drawn at this floor (µs).
const MIN_LATENCY_US: f64 = 1e-3;

/// Why the charts could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// No system has a single row to draw: run a sweep first, or check that its CSVs loaded.
    #[error("nothing to plot: no system has any rows")]
    NoData,
    /// The output directory could not be created: check the path and its permissions.
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying IO error.
        source: std::io::Error,
    },
    /// Drawing or writing a chart failed (usually the file could not be written): check free
    /// space and permissions of the directory.
    #[error("cannot draw {}: {message}", path.display())]
    Draw {
        /// The chart file.
        path: PathBuf,
        /// What plotters reported.
        message: String,
    },
}

/// A distinct, print-friendly color per system, stable across runs.
fn color(system: System) -> RGBColor {
    match system {
        System::Slime => RGBColor(0xd6, 0x27, 0x28),   // red: ours
        System::Pulsing => RGBColor(0x94, 0x67, 0xbd), // purple
        System::Ray => RGBColor(0x1f, 0x77, 0xb4),     // blue
        System::Actix => RGBColor(0x2c, 0xa0, 0x2c),   // green
        System::Floor => RGBColor(0x7f, 0x7f, 0x7f),   // grey
        System::Memcpy => RGBColor(0xbc, 0xbd, 0x22),  // olive
    }
}

/// Writes `latency.svg` and `bandwidth.svg` into `dir` (created if needed) and returns their
/// paths. `title` heads both charts (e.g. the run's host and transport).
///
/// Systems without rows are left out; rows are sorted by size.
///
/// # Errors
///
/// [`PlotError::NoData`] if no system has rows, [`PlotError::CreateDir`] or
/// [`PlotError::Draw`] if a file cannot be written.
pub fn write_plots(dir: &Path, systems: &[(System, Vec<CsvRow>)], title: &str) -> Result<Vec<PathBuf>, PlotError> {
    let series: Vec<(System, Vec<CsvRow>)> = systems
        .iter()
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(system, rows)| {
            let mut rows = rows.clone();
            rows.sort_by_key(|r| r.size);
            (*system, rows)
        })
        .collect();
    if series.is_empty() {
        return Err(PlotError::NoData);
    }
    std::fs::create_dir_all(dir).map_err(|source| PlotError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let latency = dir.join(LATENCY_SVG);
    draw_latency(&latency, &series, title).map_err(|message| PlotError::Draw {
        path: latency.clone(),
        message,
    })?;
    let bandwidth = dir.join(BANDWIDTH_SVG);
    draw_bandwidth(&bandwidth, &series, title).map_err(|message| PlotError::Draw {
        path: bandwidth.clone(),
        message,
    })?;
    Ok(vec![latency, bandwidth])
}

/// Every size any system has, ascending, for the x-axis ticks.
fn all_sizes(series: &[(System, Vec<CsvRow>)]) -> Vec<f64> {
    let mut sizes: Vec<usize> = series
        .iter()
        .flat_map(|(_, rows)| rows.iter().map(|r| r.size))
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes.into_iter().map(|s| s.max(1) as f64).collect()
}

/// The x range: a margin of half a step (a factor of ~1.6) around the sizes.
fn x_range(sizes: &[f64]) -> std::ops::Range<f64> {
    let lo = sizes.first().copied().unwrap_or(1.0);
    let hi = sizes.last().copied().unwrap_or(lo);
    (lo / 1.6)..(hi * 1.6)
}

/// 1-2-5 ticks from below `lo` to above `hi`, for a log axis.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi * 10.0 && ticks.len() < 64 {
        for m in [1.0, 2.0, 5.0] {
            let t = decade * m;
            if t >= lo && t <= hi {
                ticks.push(t);
            }
        }
        decade *= 10.0;
    }
    ticks
}

/// A latency tick: "5", "200", "1,000", "20,000" (µs), or "0.5" below one.
fn fmt_us(v: f64) -> String {
    if v < 1.0 {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        let whole = format!("{:.0}", v);
        let mut out = String::new();
        for (i, ch) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        out
    }
}

fn size_label(v: f64) -> String {
    human_size(v.round() as usize)
}

/// Multiplicative x offset that spreads `n` systems around each size on a log axis.
fn dodge(index: usize, n: usize) -> f64 {
    const STEP: f64 = 1.045;
    STEP.powf(index as f64 - (n as f64 - 1.0) / 2.0)
}

fn draw_latency(path: &Path, series: &[(System, Vec<CsvRow>)], title: &str) -> Result<(), String> {
    let sizes = all_sizes(series);
    let positive = |v: f64| {
        if v.is_finite() {
            v.max(MIN_LATENCY_US)
        } else {
            MIN_LATENCY_US
        }
    };
    let values = series
        .iter()
        .flat_map(|(_, rows)| rows.iter().flat_map(|r| [r.p50_us, r.p99_us, r.avg_us]))
        .map(positive);
    let (lo, hi) = values.fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (y_lo, y_hi) = (lo / 1.5, (hi * 1.5).max(lo * 2.0));

    let root = SVGBackend::new(path, CHART_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let caption = if title.is_empty() {
        "Echo round-trip latency".to_string()
    } else {
        format!("{title}: echo round-trip latency")
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(90)
        .build_cartesian_2d(
            x_range(&sizes).log_scale().with_key_points(sizes.clone()),
            (y_lo..y_hi).log_scale().with_key_points(log_ticks(y_lo, y_hi)),
        )
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("payload size (each way)")
        .y_desc("latency, µs (log scale)")
        .x_label_formatter(&|v| size_label(*v))
        .y_label_formatter(&|v| fmt_us(*v))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(|e| e.to_string())?;

    let n = series.len();
    for (i, (system, rows)) in series.iter().enumerate() {
        let c = color(*system);
        let shift = dodge(i, n);
        let at = |r: &CsvRow| r.size.max(1) as f64 * shift;
        let p50: Vec<(f64, f64)> = rows.iter().map(|r| (at(r), positive(r.p50_us))).collect();
        chart
            .draw_series(LineSeries::new(p50.clone(), c.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(format!("{} p50 (whisker to p99)", system.label()))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(2)));
        chart
            .draw_series(p50.iter().map(|&(x, y)| Circle::new((x, y), 4, c.filled())))
            .map_err(|e| e.to_string())?;
        // Whiskers: p50 up to p99, with a cap at p99.
        chart
            .draw_series(rows.iter().flat_map(|r| {
                let (x, y50, y99) = (at(r), positive(r.p50_us), positive(r.p99_us));
                [
                    PathElement::new(vec![(x, y50), (x, y99)], c.stroke_width(1)),
                    PathElement::new(vec![(x / 1.025, y99), (x * 1.025, y99)], c.stroke_width(2)),
                ]
            }))
            .map_err(|e| e.to_string())?;
        let avg: Vec<(f64, f64)> = rows.iter().map(|r| (at(r), positive(r.avg_us))).collect();
        chart
            .draw_series(DashedLineSeries::new(avg, 6, 4, c.mix(0.7).stroke_width(1)))
            .map_err(|e| e.to_string())?
            .label(format!("{} avg", system.label()))
            .legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 8, y), (x + 8, y), (x + 14, y)],
                    c.mix(0.7).stroke_width(1),
                )
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn draw_bandwidth(path: &Path, series: &[(System, Vec<CsvRow>)], title: &str) -> Result<(), String> {
    let sizes = all_sizes(series);
    let finite = |v: f64| if v.is_finite() { v.max(0.0) } else { 0.0 };
    let hi = series
        .iter()
        .flat_map(|(_, rows)| rows.iter().map(|r| finite(r.bw_gbps)))
        .fold(0f64, f64::max);
    let y_hi = if hi > 0.0 { hi * 1.15 } else { 1.0 };

    let root = SVGBackend::new(path, CHART_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let caption = if title.is_empty() {
        "Echo round-trip bandwidth".to_string()
    } else {
        format!("{title}: echo round-trip bandwidth")
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range(&sizes).log_scale().with_key_points(sizes.clone()), 0f64..y_hi)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("payload size (each way)")
        .y_desc("bandwidth, GB/s (2 x size / avg, decimal)")
        .x_label_formatter(&|v| size_label(*v))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(|e| e.to_string())?;
    for (system, rows) in series {
        let c = color(*system);
        let points: Vec<(f64, f64)> = rows.iter().map(|r| (r.size.max(1) as f64, finite(r.bw_gbps))).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(system.label())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&(x, y)| Circle::new((x, y), 4, c.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::csv::unique_temp_dir;
    use crate::bench::plan::{KIB, MIB};

    fn rows(scale: f64) -> Vec<CsvRow> {
        [KIB, 4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, MIB, 4 * MIB, 16 * MIB]
            .iter()
            .map(|&size| {
                let avg = scale * (20.0 + size as f64 / 1000.0);
                CsvRow {
                    size,
                    avg_us: avg,
                    p50_us: avg * 0.9,
                    p99_us: avg * 2.0,
                    bw_gbps: 2.0 * size as f64 / (avg * 1e3),
                }
            })
            .collect()
    }

    fn assert_svg(path: &Path, labels: &[&str]) {
        let text = std::fs::read_to_string(path).expect("read svg");
        assert!(
            text.starts_with("<svg"),
            "{}: starts with {:?}",
            path.display(),
            &text[..40.min(text.len())]
        );
        assert!(text.trim_end().ends_with("</svg>"), "{} is not closed", path.display());
        for label in labels {
            assert!(text.contains(label), "{} lacks {label}", path.display());
        }
    }

    #[test]
    fn writes_both_charts_with_every_system() {
        let dir = unique_temp_dir("plot");
        let systems = vec![
            (System::Slime, rows(1.0)),
            (System::Ray, rows(10.0)),
            (System::Pulsing, rows(6.0)),
            (System::Floor, rows(0.5)),
        ];
        let out = dir.join("charts");
        let paths = write_plots(&out, &systems, "vm tcp").expect("plots");
        assert_eq!(paths, vec![out.join(LATENCY_SVG), out.join(BANDWIDTH_SVG)]);
        let labels = ["Slime", "Ray", "Pulsing", "Floor", "1KB", "16MB", "256KB"];
        assert_svg(&paths[0], &labels);
        assert_svg(&paths[1], &labels);
        let latency = std::fs::read_to_string(&paths[0]).expect("read");
        assert!(latency.contains("vm tcp: echo round-trip latency"));
        assert!(latency.contains("Ray p50 (whisker to p99)"));
        assert!(latency.contains("µs"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn empty_input_is_an_error() {
        let dir = unique_temp_dir("plot-empty");
        assert!(matches!(write_plots(&dir, &[], "t"), Err(PlotError::NoData)));
        let empty_rows = vec![(System::Ray, Vec::new()), (System::Slime, Vec::new())];
        assert!(matches!(write_plots(&dir, &empty_rows, "t"), Err(PlotError::NoData)));
        assert!(!dir.join(LATENCY_SVG).exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn odd_values_do_not_panic() {
        let dir = unique_temp_dir("plot-odd");
        let one = vec![CsvRow {
            size: 1500,
            avg_us: 0.0,
            p50_us: 0.0,
            p99_us: 0.0,
            bw_gbps: 0.0,
        }];
        // One size, zero latencies (a broken clock), unsorted rows, and a system without rows.
        let mut unsorted = rows(1.0);
        unsorted.reverse();
        let systems = vec![(System::Actix, one), (System::Slime, unsorted), (System::Ray, vec![])];
        let paths = write_plots(&dir, &systems, "").expect("plots");
        assert_svg(&paths[0], &["actix", "Slime", "1500B"]);
        assert!(!std::fs::read_to_string(&paths[0]).expect("read").contains(">Ray"));
        let single = vec![(System::Slime, rows(1.0)[..1].to_vec())];
        write_plots(&dir, &single, "single").expect("one point");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unwritable_dir_is_an_error() {
        let dir = unique_temp_dir("plot-bad");
        let blocker = dir.join("file");
        std::fs::write(&blocker, "x").expect("write");
        let err = write_plots(&blocker.join("sub"), &[(System::Slime, rows(1.0))], "t");
        assert!(matches!(err, Err(PlotError::CreateDir { .. })), "{err:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn tick_helpers() {
        assert_eq!(log_ticks(3.0, 120.0), [5.0, 10.0, 20.0, 50.0, 100.0]);
        assert_eq!(fmt_us(20000.0), "20,000");
        assert_eq!(fmt_us(500.0), "500");
        assert_eq!(fmt_us(0.5), "0.5");
        assert_eq!(size_label(1024.0), "1KB");
        assert_eq!(size_label(16.0 * MIB as f64), "16MB");
        assert!((dodge(0, 1) - 1.0).abs() < 1e-12);
        assert!(dodge(0, 3) < 1.0 && dodge(2, 3) > 1.0);
    }
}
