//! Server-rendered charts: the geometry of a stacked bar chart, which a template draws as SVG
//! (no script; colours come from classes in the stylesheet, as the CSP allows no inline style).

/// One coloured part of a bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub y: f64,
    pub height: f64,
    /// The stylesheet class giving its colour (e.g. `sev-high`).
    pub class: &'static str,
    /// What a pointer hovering it reads (`<title>`).
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub x: f64,
    pub width: f64,
    pub segments: Vec<Segment>,
}

/// A label at a point of the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub x: f64,
    pub y: f64,
    pub text: String,
}

/// One series of a stack: its class, its name in the legend, and a value per bar.
pub struct Series {
    pub class: &'static str,
    pub name: &'static str,
    pub values: Vec<i64>,
}

/// A stacked bar chart laid out in a `WIDTH` × `HEIGHT` view box.
#[derive(Debug, Clone)]
pub struct StackedBars {
    pub id: &'static str,
    pub title: String,
    /// A sentence for screen readers (`<desc>`): what it shows and the totals.
    pub desc: String,
    pub width: f64,
    pub height: f64,
    /// The plot area's edges.
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
    pub bars: Vec<Bar>,
    /// Under the x axis.
    pub x_labels: Vec<Label>,
    /// Left of the y axis, each with a grid line at its `y`.
    pub y_ticks: Vec<Label>,
    /// `(class, name)` per series, for the legend.
    pub legend: Vec<(&'static str, &'static str)>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 44.0;
// Room on both sides for the scale: on a phone the chart scrolls and shows its right end.
const RIGHT: f64 = WIDTH - 36.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = HEIGHT - 28.0;

/// The smallest "nice" number (1, 2 or 5 × 10ⁿ) at or above `value`, at least 1.
pub fn nice_ceiling(value: i64) -> i64 {
    let mut magnitude = 1_i64;
    loop {
        for step in [1, 2, 5] {
            let candidate = step * magnitude;
            if candidate >= value {
                return candidate;
            }
        }
        magnitude = magnitude.saturating_mul(10);
        if magnitude == i64::MAX {
            return i64::MAX;
        }
    }
}

impl StackedBars {
    /// Lays out `series` (all of the same length, one value per bar) with `x_labels[i]` under
    /// bar `i` where it is `Some`; `bar_names[i]` names bar `i` in its segments' titles.
    pub fn new(
        id: &'static str,
        title: String,
        desc: String,
        bar_names: &[String],
        x_labels: &[Option<String>],
        series: &[Series],
    ) -> Self {
        let count = bar_names.len().max(1);
        let totals: Vec<i64> = (0..bar_names.len())
            .map(|i| series.iter().filter_map(|s| s.values.get(i)).sum())
            .collect();
        // Four grid steps of a nice size: every tick a round number.
        let peak = totals.iter().copied().max().unwrap_or(0).max(4);
        let max = nice_ceiling((peak + 3) / 4) * 4;
        let scale = (BOTTOM - TOP) / max as f64;
        let slot = (RIGHT - LEFT) / count as f64;
        let bar_width = (slot * 0.72).max(1.0);
        let bars = bar_names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let x = LEFT + slot * i as f64 + (slot - bar_width) / 2.0;
                let mut base = BOTTOM;
                let segments = series
                    .iter()
                    .filter_map(|s| {
                        let value = s.values.get(i).copied().unwrap_or(0);
                        (value > 0).then(|| {
                            let height = value as f64 * scale;
                            base -= height;
                            Segment {
                                y: base,
                                height,
                                class: s.class,
                                label: format!("{name}: {value} {}", s.name),
                            }
                        })
                    })
                    .collect();
                Bar {
                    x,
                    width: bar_width,
                    segments,
                }
            })
            .collect();
        let x_labels = x_labels
            .iter()
            .enumerate()
            .filter_map(|(i, label)| {
                label.as_ref().map(|text| Label {
                    x: LEFT + slot * (i as f64 + 0.5),
                    y: BOTTOM + 18.0,
                    text: text.clone(),
                })
            })
            .collect();
        let y_ticks = (0..=4)
            .map(|step| Label {
                x: LEFT - 6.0,
                y: BOTTOM - (BOTTOM - TOP) * f64::from(step) / 4.0,
                text: (max * i64::from(step) / 4).to_string(),
            })
            .collect();
        Self {
            id,
            title,
            desc,
            width: WIDTH,
            height: HEIGHT,
            left: LEFT,
            right: RIGHT,
            top: TOP,
            bottom: BOTTOM,
            bars,
            x_labels,
            y_ticks,
            legend: series.iter().map(|s| (s.class, s.name)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_are_nice_numbers() {
        assert_eq!(nice_ceiling(0), 1);
        assert_eq!(nice_ceiling(4), 5);
        assert_eq!(nice_ceiling(7), 10);
        assert_eq!(nice_ceiling(11), 20);
        assert_eq!(nice_ceiling(499), 500);
        assert_eq!(nice_ceiling(501), 1000);
    }

    #[test]
    fn segments_stack_from_the_axis_up_in_proportion() {
        let chart = StackedBars::new(
            "t",
            "t".into(),
            "d".into(),
            &["a".into(), "b".into()],
            &[Some("a".into()), None],
            &[
                Series {
                    class: "sev-low",
                    name: "LOW",
                    values: vec![2, 0],
                },
                Series {
                    class: "sev-high",
                    name: "HIGH",
                    values: vec![3, 10],
                },
            ],
        );
        // Peak 10 → ticks of 5 up to 20: the bars are half and a quarter of the height.
        let [first, second] = &chart.bars[..] else {
            panic!("two bars")
        };
        assert_eq!(second.segments.len(), 1);
        let second_height = second.segments[0].height;
        assert!((second_height - (BOTTOM - TOP) / 2.0).abs() < 1e-9);
        assert_eq!(first.segments[0].class, "sev-low");
        assert!((first.segments[0].y + first.segments[0].height - BOTTOM).abs() < 1e-9);
        let first_height: f64 = first.segments.iter().map(|s| s.height).sum();
        assert!((first_height - (BOTTOM - TOP) / 4.0).abs() < 1e-9);
        assert_eq!(first.segments[1].label, "a: 3 HIGH");
        assert_eq!(chart.x_labels.len(), 1);
        let ticks: Vec<&str> = chart.y_ticks.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(ticks, ["0", "5", "10", "15", "20"]);
    }
}
