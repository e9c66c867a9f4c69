//! The SVG chart: change latency p99 (and p50, dashed) against clients, one line per
//! server, one panel per state size. Log scales on both axes. Text is left to the SVG
//! viewer's fonts: plotters is built without its font features, so nothing here needs
//! fontconfig or font files.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::results::Results;
use crate::scenarios::latency;
use crate::statefile::size_label;

const SERIES: [(&str, RGBColor); 5] = [
    ("bridge", RGBColor(0xd9, 0x5f, 0x02)),
    ("bridge-diff", RGBColor(0xe6, 0xab, 0x02)),
    ("python", RGBColor(0x1b, 0x9e, 0x77)),
    ("python-poll", RGBColor(0x66, 0xa6, 0x1e)),
    ("node", RGBColor(0x75, 0x70, 0xb3)),
];

/// Writes the chart to `path`. Nothing to draw is not an error: returns false.
pub(crate) fn latency_chart(
    results: &Results,
    sizes: &[usize],
    clients: &[usize],
    path: &Path,
) -> Result<bool> {
    let points = |server: &str, size: usize, metric: &str| -> Vec<(f64, f64)> {
        clients
            .iter()
            .filter_map(|&n| {
                results
                    .median_of(latency::ID, &latency::case(size, n), metric, server)
                    .filter(|v| *v > 0.0)
                    .map(|v| (n as f64, v))
            })
            .collect()
    };
    let all: Vec<f64> = sizes
        .iter()
        .flat_map(|&s| {
            SERIES
                .iter()
                .flat_map(move |(name, _)| [(name, s, "p99"), (name, s, "p50")])
        })
        .flat_map(|(name, s, m)| points(name, s, m).into_iter().map(|(_, y)| y))
        .collect();
    if all.is_empty() {
        return Ok(false);
    }
    let y_min = all.iter().copied().fold(f64::INFINITY, f64::min) / 1.5;
    // Headroom above the highest line for the legend.
    let y_max = all.iter().copied().fold(0.0, f64::max) * 8.0;
    let x_max = clients.iter().copied().max().unwrap_or(1) as f64 * 1.5;

    let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw the chart: {e}");
    let width = 520 * sizes.len().max(1) as u32;
    let root = SVGBackend::new(path, (width, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (title, body) = root.split_vertically(36);
    title
        .titled(
            "Change latency, file replaced → every client has the new state: p99 solid, p50 dashed (medians)",
            ("sans-serif", 16),
        )
        .map_err(|e| err(&e))?;
    let panels = body.split_evenly((1, sizes.len().max(1)));
    for (panel, &size) in panels.iter().zip(sizes) {
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{} state", size_label(size)), ("sans-serif", 15))
            .margin(12)
            .x_label_area_size(38)
            .y_label_area_size(58)
            .build_cartesian_2d((0.8f64..x_max).log_scale(), (y_min..y_max).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("clients")
            .y_desc("latency (ms)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| {
                if *y >= 1.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y:.2}")
                }
            })
            .label_style(("sans-serif", 12))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(|e| err(&e))?;
        for (name, color) in SERIES {
            let p99 = points(name, size, "p99");
            if p99.is_empty() {
                continue;
            }
            let style = color.stroke_width(2);
            chart
                .draw_series(LineSeries::new(p99.clone(), style))
                .map_err(|e| err(&e))?
                .label(format!("{name} p99"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(p99.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| err(&e))?;
            let p50 = points(name, size, "p50");
            chart
                .draw_series(DashedLineSeries::new(
                    p50.clone(),
                    4,
                    3,
                    color.stroke_width(1),
                ))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(p50.iter().map(|&p| Cross::new(p, 3, color.stroke_width(1))))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 12))
            .border_style(BLACK.mix(0.3))
            .background_style(WHITE.mix(0.9))
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(true)
}
