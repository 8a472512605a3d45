//! Charts drawn on the server as inline SVG: the geometry is computed here, the markup is in
//! `templates/charts/`. Every bar and point has a `<title>`, and every chart comes with its
//! numbers as a table, so a chart reads without JavaScript and without sight.

use askama::Template;

/// The drawing area, in SVG units (the SVG scales to its box).
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
/// Room for the axis labels: left of the plot and under it.
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 8.0;
/// Most labels under the x axis; the others are left out (their points keep their titles).
const X_LABELS: usize = 8;

/// A label on an axis at a position.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub at: f64,
    pub label: String,
}

/// One part of a stacked bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub y: f64,
    pub height: f64,
    /// The CSS class that colours it.
    pub class: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub x: f64,
    pub width: f64,
    /// From the bottom up.
    pub segments: Vec<Segment>,
    pub title: String,
}

/// A series of a stacked bar chart: its name, CSS class and one value per point.
pub struct Series<'a> {
    pub name: &'a str,
    pub class: &'static str,
    pub values: Vec<f64>,
}

#[derive(Template)]
#[template(path = "charts/bars.html")]
pub struct BarChart {
    pub label: String,
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub base: f64,
    pub bars: Vec<Bar>,
    pub y_ticks: Vec<Tick>,
    pub x_ticks: Vec<Tick>,
    /// Series names and classes, for the legend.
    pub legend: Vec<(String, &'static str)>,
}

/// One point of a line.
#[derive(Debug, Clone, PartialEq)]
pub struct Dot {
    pub x: f64,
    pub y: f64,
    pub title: String,
}

pub struct Line {
    pub name: String,
    pub class: &'static str,
    /// `x,y` pairs for a polyline; a point without a value breaks the line.
    pub runs: Vec<String>,
    pub dots: Vec<Dot>,
}

#[derive(Template)]
#[template(path = "charts/lines.html")]
pub struct LineChart {
    pub label: String,
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub base: f64,
    pub lines: Vec<Line>,
    pub y_ticks: Vec<Tick>,
    pub x_ticks: Vec<Tick>,
}

/// The top of the y axis: four round steps (1, 2, 2.5 or 5 times a power of ten) that reach
/// `max`; whole steps for counts. An empty chart still has an axis.
pub fn axis_top(max: f64, whole: bool) -> f64 {
    let least = if whole { 1.0 } else { 0.25 };
    let wanted = max / 4.0;
    if !wanted.is_finite() || wanted <= 0.0 {
        return 4.0 * least;
    }
    let power = 10f64.powf(wanted.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .filter(|step| !whole || step.fract() == 0.0)
        .find(|&step| step >= wanted)
        .unwrap_or(10.0 * power);
    4.0 * step.max(least)
}

/// Ticks of the y axis from 0 to `top` in four steps, labelled by `format`.
fn y_ticks(top: f64, format: &dyn Fn(f64) -> String) -> Vec<Tick> {
    (0..=4)
        .map(|step| {
            let value = top * step as f64 / 4.0;
            Tick { at: y_of(value, top), label: format(value) }
        })
        .collect()
}

fn y_of(value: f64, top: f64) -> f64 {
    let plot = HEIGHT - BOTTOM - TOP;
    HEIGHT - BOTTOM - plot * (value / top).clamp(0.0, 1.0)
}

/// Where the slot of point `i` of `n` starts, and its width.
fn slot(i: usize, n: usize) -> (f64, f64) {
    let width = (WIDTH - LEFT) / n.max(1) as f64;
    (LEFT + width * i as f64, width)
}

/// Labels under at most `X_LABELS` evenly spread points, centred on their slots.
fn x_ticks(labels: &[String]) -> Vec<Tick> {
    let every = labels.len().div_ceil(X_LABELS).max(1);
    labels
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0)
        .map(|(i, label)| {
            let (x, width) = slot(i, labels.len());
            Tick { at: x + width / 2.0, label: label.clone() }
        })
        .collect()
}

/// Stacked bars, one per label; `titles` describe each bar in words.
pub fn stacked_bars(label: &str, labels: &[String], series: &[Series<'_>], titles: Vec<String>) -> BarChart {
    let totals: Vec<f64> = (0..labels.len())
        .map(|i| series.iter().map(|s| s.values.get(i).copied().unwrap_or(0.0)).sum())
        .collect();
    let top = axis_top(totals.iter().copied().fold(0.0, f64::max), true);
    let bars = titles
        .into_iter()
        .enumerate()
        .map(|(i, title)| {
            let (x, width) = slot(i, labels.len());
            let mut below = 0.0;
            let segments = series
                .iter()
                .filter_map(|s| {
                    let value = s.values.get(i).copied().unwrap_or(0.0);
                    if value <= 0.0 {
                        return None;
                    }
                    let (bottom, upper) = (y_of(below, top), y_of(below + value, top));
                    below += value;
                    Some(Segment { y: upper, height: bottom - upper, class: s.class })
                })
                .collect();
            Bar { x: x + width * 0.1, width: width * 0.8, segments, title }
        })
        .collect();
    BarChart {
        label: label.to_owned(),
        width: WIDTH,
        height: HEIGHT,
        left: LEFT,
        base: HEIGHT - BOTTOM,
        bars,
        y_ticks: y_ticks(top, &|v| count(v as i64)),
        x_ticks: x_ticks(labels),
        legend: series.iter().map(|s| (s.name.to_owned(), s.class)).collect(),
    }
}

/// Lines over the labels; a point is `None` where there is no value (no calls).
pub fn lines(
    label: &str,
    labels: &[String],
    lines: Vec<(&str, &'static str, Vec<Option<f64>>)>,
    format: &dyn Fn(f64) -> String,
) -> LineChart {
    let max = lines.iter().flat_map(|(_, _, values)| values.iter().flatten().copied()).fold(0.0, f64::max);
    let top = axis_top(max, false);
    let lines = lines
        .into_iter()
        .map(|(name, class, values)| {
            let mut runs = Vec::new();
            let mut run = String::new();
            let mut dots = Vec::new();
            for (i, value) in values.iter().enumerate() {
                let (x, width) = slot(i, labels.len());
                let x = x + width / 2.0;
                match value {
                    Some(value) => {
                        let y = y_of(*value, top);
                        if !run.is_empty() {
                            run.push(' ');
                        }
                        run.push_str(&format!("{x:.1},{y:.1}"));
                        dots.push(Dot { x, y, title: format!("{}: {name} {}", labels[i], format(*value)) });
                    }
                    None => runs.extend((!run.is_empty()).then(|| std::mem::take(&mut run))),
                }
            }
            runs.extend((!run.is_empty()).then_some(run));
            Line { name: name.to_owned(), class, runs, dots }
        })
        .collect();
    LineChart {
        label: label.to_owned(),
        width: WIDTH,
        height: HEIGHT,
        left: LEFT,
        base: HEIGHT - BOTTOM,
        lines,
        y_ticks: y_ticks(top, format),
        x_ticks: x_ticks(labels),
    }
}

/// A count with thousands separated: `12,345`.
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in ms as people read it: `0.4 ms`, `12 ms`, `1.5 s`.
pub fn millis(ms: f64) -> String {
    match ms {
        ms if ms < 10.0 => format!("{ms:.1} ms"),
        ms if ms < 1000.0 => format!("{ms:.0} ms"),
        ms => format!("{:.1} s", ms / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("day {i}")).collect()
    }

    #[test]
    fn the_axis_has_four_round_steps_up_to_the_largest_value() {
        assert_eq!(axis_top(0.0, true), 4.0, "an empty range still has an axis, in whole steps");
        assert_eq!(axis_top(1.0, true), 4.0);
        assert_eq!(axis_top(3.0, true), 4.0);
        assert_eq!(axis_top(7.0, true), 8.0);
        assert_eq!(axis_top(9.0, true), 20.0, "whole steps: 2.5 is no step for counts");
        assert_eq!(axis_top(100.0, true), 100.0);
        assert_eq!(axis_top(120.0, true), 200.0);
        assert_eq!(axis_top(0.3, false), 1.0);
        assert_eq!(axis_top(12.0, false), 20.0);
        assert_eq!(axis_top(9.0, false), 10.0);
        let huge = 9.2e18;
        assert!(axis_top(huge, true) >= huge && axis_top(huge, true).is_finite());
        assert_eq!(axis_top(f64::NAN, true), 4.0);
    }

    #[test]
    fn bars_stack_their_series_and_stay_inside_the_plot() {
        let series = [
            Series { name: "Successes", class: "ok", values: vec![80.0, 0.0, 5.0] },
            Series { name: "Failures", class: "bad", values: vec![20.0, 0.0, 0.0] },
        ];
        let titles = vec!["a".into(), "b".into(), "c".into()];
        let chart = stacked_bars("Requests", &labels(3), &series, titles);
        assert_eq!(chart.bars.len(), 3);
        let first = &chart.bars[0];
        assert_eq!(first.segments.len(), 2);
        // 100 is the top of the axis: the two segments fill the plot from the base to the top.
        assert!((first.segments[0].y + first.segments[0].height - chart.base).abs() < 1e-9);
        assert!((first.segments[1].y - TOP).abs() < 1e-9, "{:?}", first.segments[1]);
        assert!((first.segments[0].height - 4.0 * first.segments[1].height).abs() < 1e-9);
        assert!(chart.bars[1].segments.is_empty(), "a day without calls has no segments");
        assert_eq!(chart.y_ticks.first().unwrap().label, "0");
        assert_eq!(chart.y_ticks.last().unwrap().label, "100");
        let svg = chart.render().unwrap();
        assert_eq!(svg.matches("<title>").count(), 3 + 1, "a title per bar and one for the chart");
        assert!(svg.contains("<title>a</title>") && svg.contains("Successes"));
    }

    #[test]
    fn huge_values_are_drawn_to_scale_with_readable_labels() {
        let series = [Series { name: "Requests", class: "ok", values: vec![4.0e12, 1.0e12] }];
        let chart = stacked_bars("Requests", &labels(2), &series, vec!["x".into(), "y".into()]);
        assert_eq!(chart.y_ticks.last().unwrap().label, "4,000,000,000,000");
        let heights: Vec<f64> = chart.bars.iter().map(|b| b.segments[0].height).collect();
        assert!((heights[0] - 4.0 * heights[1]).abs() < 1e-6);
    }

    #[test]
    fn an_empty_range_draws_axes_and_no_bars_or_lines() {
        let chart = stacked_bars("Requests", &labels(0), &[], Vec::new());
        assert!(chart.bars.is_empty());
        let ticks: Vec<&str> = chart.y_ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(ticks, ["0", "1", "2", "3", "4"], "whole numbers on a count axis");
        assert!(chart.render().unwrap().contains("<svg"));
        let chart =
            lines("Latency", &labels(3), vec![("p95", "p95", vec![None, None, None])], &|v| millis(v));
        assert!(chart.lines[0].runs.is_empty() && chart.lines[0].dots.is_empty());
        assert!(chart.render().unwrap().contains("<svg"));
    }

    #[test]
    fn a_line_breaks_where_a_point_has_no_value() {
        let values = vec![Some(10.0), Some(20.0), None, Some(5.0)];
        let chart = lines("Latency", &labels(4), vec![("p50", "p50", values)], &|v| millis(v));
        let line = &chart.lines[0];
        assert_eq!(line.runs.len(), 2, "{:?}", line.runs);
        assert_eq!(line.runs[0].split(' ').count(), 2);
        assert_eq!(line.dots.len(), 3);
        assert_eq!(line.dots[0].title, "day 0: p50 10 ms");
        let svg = chart.render().unwrap();
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 3);
    }

    #[test]
    fn a_single_point_is_centred_and_labelled() {
        let series = [Series { name: "Requests", class: "ok", values: vec![3.0] }];
        let chart = stacked_bars("Requests", &labels(1), &series, vec!["only".into()]);
        assert_eq!(chart.x_ticks.len(), 1);
        assert!((chart.x_ticks[0].at - (LEFT + (WIDTH - LEFT) / 2.0)).abs() < 1e-9);
        assert_eq!(chart.y_ticks.last().unwrap().label, "4");
    }

    #[test]
    fn many_points_get_at_most_eight_labels() {
        let series = [Series { name: "Requests", class: "ok", values: vec![1.0; 90] }];
        let chart = stacked_bars("Requests", &labels(90), &series, vec![String::new(); 90]);
        assert!(chart.x_ticks.len() <= X_LABELS && chart.x_ticks.len() >= X_LABELS - 1);
        assert_eq!(chart.bars.len(), 90);
    }

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(-1234567), "-1,234,567");
        assert_eq!(millis(0.42), "0.4 ms");
        assert_eq!(millis(12.4), "12 ms");
        assert_eq!(millis(1500.0), "1.5 s");
    }
}
