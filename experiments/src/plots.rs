//! Plots of a run, each written as SVG and PNG: packets per second against packet size per
//! design (one chart per direction, bars the 95 % interval of the median over the rounds), operations per packet
//! stacked by component, the request/response rate, and for the staging designs the share
//! of packets staged bin by bin through a run (its complement is the fallback rate) and the
//! data ring's fill.
//!
//! Every number drawn is a median computed by [`crate::summarise`] and the cost table of the
//! report, from the saved samples; the plots add no data of their own.
//!
//! Text needs a TrueType font. It is taken from `NETSTAGE_FONT` when set, otherwise from the
//! usual places of Debian's `fonts-dejavu-core` and `fonts-liberation`; without one the
//! plots fail with [`PlotError::NoFont`], which names the package to install.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor;

use crate::{scenario_median, summarise, Dir, Results, Row, Sample, SizeSpec};

/// Why the plots could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// No usable TrueType font was found.
    #[error(
        "no TrueType font for the plots (looked at $NETSTAGE_FONT and {searched}); \
         install fonts-dejavu-core or set NETSTAGE_FONT to a .ttf file"
    )]
    NoFont {
        /// The paths looked at.
        searched: String,
    },
    /// Drawing or encoding a chart failed.
    #[error("drawing {file}: {msg}")]
    Draw {
        /// The file being written.
        file: PathBuf,
        /// What the drawing backend said.
        msg: String,
    },
}

/// Where fonts are looked for when `NETSTAGE_FONT` is not set.
pub const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
];

const FAMILY: &str = "sans-serif";

/// Loads and registers the font once per process.
fn font() -> Result<(), PlotError> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    let r = LOADED.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os("NETSTAGE_FONT") {
            candidates.push(p.into());
        }
        candidates.extend(FONT_PATHS.iter().map(PathBuf::from));
        for p in &candidates {
            let Ok(bytes) = std::fs::read(p) else {
                continue;
            };
            // The plotting library keeps the font for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok() {
                return Ok(());
            }
        }
        Err(FONT_PATHS.join(", "))
    });
    r.clone().map_err(|searched| PlotError::NoFont { searched })
}

/// One design's line on a pps-vs-size chart: (size, median, interval low, interval high) per size.
type Line = (String, Vec<(f64, f64, f64, f64)>);

/// A mix on a pps-vs-size chart, drawn as a point at its mean size, not on the lines: the
/// line it takes its colour from, the spec, and (mean size, median, low, high).
type MixPoint = (usize, String, (f64, f64, f64, f64));

/// A bar chart: one group per design; each series holds one value per design and is drawn
/// stacked on the series before it or beside it.
struct Bars {
    caption: String,
    y_desc: &'static str,
    names: Vec<String>,
    series: Vec<(Cow<'static, str>, Vec<f64>)>,
    stacked: bool,
    legend: SeriesLabelPosition,
}

/// The charts drawn from one run.
enum Chart {
    /// Packets per second against packet size, one line per design through the fixed
    /// sizes, a labelled point per design and mix.
    Pps {
        dir: Dir,
        lines: Vec<Line>,
        mixes: Vec<MixPoint>,
    },
    /// Operations per packet by component, or request/response rates.
    Bars(Bars),
    /// A percentage bin by bin through one run, one line per design: the share of packets
    /// staged, or the data ring's mean fill.
    Timeline {
        caption: String,
        y_desc: &'static str,
        lines: Vec<(String, Vec<(f64, f64)>)>,
    },
}

/// Per staging design at `dir` and `size`: the first round's timeline as (milliseconds,
/// percent of the bin's packets staged), bins without packets left out.
pub fn staged_timelines(r: &Results, dir: Dir, size: &SizeSpec) -> Vec<(String, Vec<(f64, f64)>)> {
    timelines(r, dir, size, &["slots:", "ring:"], |b| {
        (b.packets > 0.0).then(|| 100.0 * b.staged / b.packets)
    })
}

/// Per data-ring design at `dir` and `size`: the first round's timeline as (milliseconds,
/// mean fill of the data ring in percent), bins without a sample left out.
pub fn fill_timelines(r: &Results, dir: Dir, size: &SizeSpec) -> Vec<(String, Vec<(f64, f64)>)> {
    timelines(r, dir, size, &["ring:"], |b| b.fill_pct)
}

/// The first timeline of each design whose name starts with one of `prefixes`, at `dir` and
/// `size`, as (milliseconds, `value` of the bin) for the bins that have a value.
fn timelines(
    r: &Results,
    dir: Dir,
    size: &SizeSpec,
    prefixes: &[&str],
    value: impl Fn(&crate::Bin) -> Option<f64>,
) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for s in &r.samples {
        let wanted = prefixes.iter().any(|p| s.design.starts_with(p));
        if s.dir != dir || &s.size != size || !wanted || s.timeline.is_empty() {
            continue;
        }
        if out.iter().any(|(d, _)| *d == s.label()) {
            continue;
        }
        let pts = s
            .timeline
            .iter()
            .filter_map(|b| value(b).map(|v| (b.t * 1e3, v)))
            .collect();
        out.push((s.label(), pts));
    }
    out
}

/// The components stacked in the cost chart, in drawing order.
pub const COST_COMPONENTS: [&str; 5] = [
    "grant-copy ops",
    "grant-copy calls",
    "pages mapped",
    "kernel crossings",
    "notifications",
];

/// The operations per packet of one design in one scenario, in [`COST_COMPONENTS`] order
/// (medians over the rounds; the same numbers as the report's cost table).
pub fn cost_components(
    r: &Results,
    dir: Dir,
    size: &SizeSpec,
    design: &str,
    queues: u16,
) -> Vec<f64> {
    let med = |f: &dyn Fn(&Sample) -> f64| scenario_median(r, dir, size, design, queues, f);
    vec![
        med(&|s| s.back_per_packet("grant_copy_ops")),
        med(&|s| s.back_per_packet("grant_copy_calls")),
        med(&|s| s.back_per_packet("grant_maps")),
        med(&|s| s.grants_per_packet("kernel_crossings")),
        med(&|s| s.back_per_packet("notifications")),
    ]
}

fn charts(r: &Results) -> Vec<(String, Chart)> {
    let rows = summarise(r);
    let mut out = Vec::new();
    for dir in [Dir::Tx, Dir::Rx] {
        let of: Vec<&Row> = rows.iter().filter(|x| x.dir == dir).collect();
        if of.is_empty() {
            continue;
        }
        out.push(pps_chart(r, dir, &of));
        let size = cost_chart_size(&of);
        out.push(cost_chart(r, dir, &of, &size));
        out.extend(timeline_charts(r, dir, &size));
    }
    for dir in [Dir::Tx, Dir::Rx] {
        out.extend(axis_charts(&rows, dir));
    }
    out.extend(rr_chart(&rows, &r.machine.poll));
    out
}

/// The rate by packet size of direction `dir`'s rows `of`, each design a line (mixes as
/// points of their own), with the peers measured beside them.
fn pps_chart(r: &Results, dir: Dir, of: &[&Row]) -> (String, Chart) {
    let mut lines: Vec<Line> = Vec::new();
    let mut mixes: Vec<MixPoint> = Vec::new();
    for row in of {
        let point = (row.size.mean(), row.pps.median, row.pps.lo, row.pps.hi);
        let i = match lines.iter().position(|(d, _)| *d == row.label()) {
            Some(i) => i,
            None => {
                lines.push((row.label(), Vec::new()));
                lines.len() - 1
            }
        };
        if row.size.is_mixed() {
            mixes.push((i, row.size.to_string(), point));
        } else {
            lines[i].1.push(point);
        }
    }
    for p in crate::peer_rows(r).into_iter().filter(|p| p.dir == dir) {
        let name = format!("{} (testpmd)", p.peer);
        let point = (p.size as f64, p.pps.median, p.pps.lo, p.pps.hi);
        match lines.iter_mut().find(|(d, _)| *d == name) {
            Some((_, pts)) => pts.push(point),
            None => lines.push((name, vec![point])),
        }
    }
    (format!("pps-{dir}"), Chart::Pps { dir, lines, mixes })
}

/// The size the cost chart is drawn at: 1500 B when measured, else the largest fixed
/// size, else the first mix.
fn cost_chart_size(of: &[&Row]) -> SizeSpec {
    let fixed = of.iter().filter_map(|x| x.size.fixed());
    if fixed.clone().any(|n| n == 1500) {
        SizeSpec::Fixed(1500)
    } else {
        fixed
            .max()
            .map_or_else(|| of[0].size.clone(), SizeSpec::Fixed)
    }
}

/// The backend's operations per packet at `size`, stacked by component, per design.
fn cost_chart(r: &Results, dir: Dir, of: &[&Row], size: &SizeSpec) -> (String, Chart) {
    let at: Vec<_> = of.iter().filter(|x| x.size == *size).collect();
    let costs: Vec<Vec<f64>> = at
        .iter()
        .map(|x| cost_components(r, dir, size, &x.design, x.queues))
        .collect();
    let series = COST_COMPONENTS
        .iter()
        .enumerate()
        .map(|(k, name)| (Cow::Borrowed(*name), costs.iter().map(|c| c[k]).collect()))
        .collect();
    let bars = Bars {
        caption: format!(
            "{} {}: backend operations per packet",
            dir.to_string().to_uppercase(),
            size.with_unit()
        ),
        y_desc: "operations per packet",
        names: at.iter().map(|x| x.label()).collect(),
        series,
        stacked: true,
        legend: SeriesLabelPosition::UpperRight,
    };
    (format!("cost-{dir}"), Chart::Bars(bars))
}

/// The first round's staged share and data-ring fill per 10 ms at `size`, where measured.
fn timeline_charts(r: &Results, dir: Dir, size: &SizeSpec) -> Vec<(String, Chart)> {
    let mut out = Vec::new();
    let d = dir.to_string().to_uppercase();
    let at_size = size.with_unit();
    let lines = staged_timelines(r, dir, size);
    if !lines.is_empty() {
        let caption =
            format!("{d} {at_size}: packets staged, wholly or in part, per 10 ms (round 1)");
        let y_desc = "packets staged (%)";
        out.push((
            format!("staged-{dir}"),
            Chart::Timeline {
                caption,
                y_desc,
                lines,
            },
        ));
    }
    let lines = fill_timelines(r, dir, size);
    if !lines.is_empty() {
        let caption = format!("{d} {at_size}: mean data-ring fill per 10 ms (round 1)");
        let y_desc = "data ring in use (%)";
        out.push((
            format!("fill-{dir}"),
            Chart::Timeline {
                caption,
                y_desc,
                lines,
            },
        ));
    }
    out
}

/// Request/response transactions per second, blocking (the series named after the sweep's
/// wait, `blocking`) and busy-polling, per design.
fn rr_chart(rows: &[Row], blocking: &str) -> Option<(String, Chart)> {
    let mut rr: Vec<(String, f64, f64)> = Vec::new();
    for row in rows.iter().filter(|x| x.dir.is_rr()) {
        let i = match rr.iter().position(|(d, _, _)| *d == row.design) {
            Some(i) => i,
            None => {
                rr.push((row.design.clone(), 0.0, 0.0));
                rr.len() - 1
            }
        };
        if row.dir == Dir::RrBusy {
            rr[i].2 = row.pps.median;
        } else {
            rr[i].1 = row.pps.median;
        }
    }
    if rr.is_empty() {
        return None;
    }
    let bars = Bars {
        caption: "Request/response: transactions per second (1-byte payload)".into(),
        y_desc: "transactions per second",
        names: rr.iter().map(|x| x.0.clone()).collect(),
        series: vec![
            (
                blocking.to_string().into(),
                rr.iter().map(|x| x.1).collect(),
            ),
            ("busy-poll".into(), rr.iter().map(|x| x.2).collect()),
        ],
        stacked: false,
        legend: SeriesLabelPosition::UpperLeft,
    };
    Some(("rr".into(), Chart::Bars(bars)))
}

/// A design's place on a sizing axis.
pub(crate) struct AxisPoint {
    /// The family (ring designs of one policy, slots in one encoding), as the caption says it.
    pub(crate) family: String,
    /// The chart's file name.
    pub(crate) chart: String,
    /// What the parameter is.
    pub(crate) what: &'static str,
    /// The parameter: ring order or slot data-len.
    pub(crate) param: u32,
}

/// Where `design` lies on a sizing axis, if it does.
pub(crate) fn axis_of(design: &str) -> Option<AxisPoint> {
    use netstage_fallback::Design;
    let (family, chart, what, param) = match design.parse::<Design>().ok()? {
        d @ Design::Ring { order, .. } => {
            // What follows the order: the policy, and `:wait` if the design has it.
            let name = d.to_string();
            let tail = name.splitn(3, ':').nth(2).unwrap_or_default();
            (
                format!("ring:<order>:{tail}"),
                format!("axis-ring-order-{tail}"),
                "ring order",
                order,
            )
        }
        Design::Slots { data_len } => (
            "slots:<data-len>".into(),
            "axis-slots-data-len".into(),
            "slot data-len (B)",
            data_len,
        ),
        Design::SlotsRfc { data_len } => (
            "slots-rfc:<data-len>".into(),
            "axis-slots-rfc-data-len".into(),
            "slot data-len (B)",
            data_len,
        ),
        _ => return None,
    };
    Some(AxisPoint {
        family,
        chart: chart.replace(':', "-"),
        what,
        param,
    })
}

/// One chart per sizing axis the run swept (three or more designs of one family: ring
/// orders, slot data-lens): packets per second against the parameter, a bar per size.
fn axis_charts(rows: &[crate::Row], dir: Dir) -> Vec<(String, Chart)> {
    let of: Vec<(AxisPoint, &crate::Row)> = rows
        .iter()
        .filter(|x| x.dir == dir && x.queues == 1)
        .filter_map(|x| Some((axis_of(&x.design)?, x)))
        .collect();
    let mut charts: Vec<&AxisPoint> = Vec::new();
    for (a, _) in &of {
        if !charts.iter().any(|c| c.chart == a.chart) {
            charts.push(a);
        }
    }
    let mut sizes: Vec<&SizeSpec> = of.iter().map(|(_, x)| &x.size).collect();
    sizes.sort_by_key(|s| s.sort_key());
    sizes.dedup();
    let mut out = Vec::new();
    for axis in charts {
        let members = || of.iter().filter(|(a, _)| a.chart == axis.chart);
        let mut params: Vec<u32> = members().map(|(a, _)| a.param).collect();
        params.sort_unstable();
        params.dedup();
        if params.len() < 3 {
            continue;
        }
        let pps = |p: u32, size: &SizeSpec| {
            members()
                .find(|(a, x)| a.param == p && &x.size == size)
                .map_or(0.0, |(_, x)| x.pps.median)
        };
        let series = sizes
            .iter()
            .map(|&size| {
                let v = params.iter().map(|&p| pps(p, size)).collect();
                (Cow::Owned(size.with_unit()), v)
            })
            .collect();
        let d = dir.to_string().to_uppercase();
        let bars = Bars {
            caption: format!("{d}: packets per second by {}, {}", axis.what, axis.family),
            y_desc: "packets per second",
            names: params.iter().map(u32::to_string).collect(),
            series,
            stacked: false,
            legend: SeriesLabelPosition::UpperRight,
        };
        out.push((format!("{}-{dir}", axis.chart), Chart::Bars(bars)));
    }
    out
}

/// The names of the charts a run gets (the files are `<name>.svg` and `<name>.png`).
pub fn chart_names(r: &Results) -> Vec<String> {
    charts(r).into_iter().map(|(n, _)| n).collect()
}

const SIZE: (u32, u32) = (960, 600);

fn palette(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0x8c, 0x56, 0x4b),
        RGBColor(0xe3, 0x77, 0xc2),
        RGBColor(0x7f, 0x7f, 0x7f),
    ];
    C[i % C.len()]
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

impl Chart {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        area.fill(&WHITE)?;
        match self {
            Chart::Pps { dir, lines, mixes } => draw_pps(area, *dir, lines, mixes),
            Chart::Bars(b) => draw_bars(area, b),
            Chart::Timeline {
                caption,
                y_desc,
                lines,
            } => draw_timeline(area, caption, y_desc, lines),
        }
    }
}

fn draw_pps<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    dir: Dir,
    lines: &[Line],
    mixes: &[MixPoint],
) -> DrawResult<DB> {
    let pts = lines
        .iter()
        .flat_map(|(_, p)| p.iter())
        .chain(mixes.iter().map(|(_, _, p)| p));
    let (mut xlo, mut xhi, mut ylo, mut yhi) = (f64::MAX, 0.0f64, f64::MAX, 0.0f64);
    for &(x, _, lo, hi) in pts {
        xlo = xlo.min(x);
        xhi = xhi.max(x);
        ylo = ylo.min(lo.max(1.0));
        yhi = yhi.max(hi);
    }
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "{} packets per second by packet size",
                dir.to_string().to_uppercase()
            ),
            (FAMILY, 24),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(
            ((xlo / 1.5)..(xhi * 1.5)).log_scale(),
            ((ylo / 2.0)..(yhi * 2.0)).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc(if mixes.is_empty() {
            "packet size (bytes)"
        } else {
            "packet size (bytes; a mix, circled, at its mean size)"
        })
        .y_desc("packets per second")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .label_style((FAMILY, 14))
        .draw()?;
    for (i, (design, p)) in lines.iter().enumerate() {
        let colour = palette(i);
        chart
            .draw_series(LineSeries::new(
                p.iter().map(|&(x, m, _, _)| (x, m)),
                colour.stroke_width(2),
            ))?
            .label(design.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        chart.draw_series(
            p.iter()
                .map(|&(x, m, lo, hi)| ErrorBar::new_vertical(x, lo, m, hi, colour.filled(), 8)),
        )?;
    }
    for (k, (i, spec, (x, m, lo, hi))) in mixes.iter().enumerate() {
        let colour = palette(*i);
        chart.draw_series([ErrorBar::new_vertical(*x, *lo, *m, *hi, colour.filled(), 8)])?;
        chart.draw_series([Circle::new((*x, *m), 6, colour.stroke_width(2))])?;
        // Each mix named once, above its highest point: the designs' points crowd there.
        if mixes[..k].iter().any(|(_, s, _)| s == spec) {
            continue;
        }
        let top = mixes
            .iter()
            .filter(|(_, s, _)| s == spec)
            .map(|(_, _, p)| p.3)
            .fold(*hi, f64::max);
        chart.draw_series([Text::new(
            spec.clone(),
            (*x, top * 1.15),
            (FAMILY, 14)
                .into_font()
                .color(&BLACK)
                .pos(text_anchor::Pos::new(
                    text_anchor::HPos::Center,
                    text_anchor::VPos::Bottom,
                )),
        )])?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

fn draw_timeline<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    y_desc: &str,
    lines: &[(String, Vec<(f64, f64)>)],
) -> DrawResult<DB> {
    let end = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.0))
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end, 0f64..110f64)?;
    chart
        .configure_mesh()
        .x_desc("time in the measured window (ms)")
        .y_desc(y_desc)
        .label_style((FAMILY, 14))
        .draw()?;
    for (i, (design, p)) in lines.iter().enumerate() {
        let colour = palette(i);
        chart
            .draw_series(LineSeries::new(p.iter().copied(), colour.stroke_width(2)))?
            .label(design.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    legend(&mut chart, SeriesLabelPosition::MiddleRight)
}

fn draw_bars<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, b: &Bars) -> DrawResult<DB> {
    let n = b.names.len().max(1);
    let height = |i: usize| -> f64 {
        let v = b
            .series
            .iter()
            .map(|(_, v)| v.get(i).copied().unwrap_or(0.0));
        if b.stacked {
            v.sum()
        } else {
            v.fold(0.0, f64::max)
        }
    };
    let top = (0..n).map(height).fold(0.0f64, f64::max);
    let top = if top > 0.0 { top * 1.25 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(&b.caption, (FAMILY, 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => b.names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_desc(b.y_desc)
        .y_label_formatter(&|y| tick(*y))
        .label_style((FAMILY, 14))
        .draw()?;
    // Each design's segment in pixels: side-by-side bars split its middle 3/4.
    let w = chart.plotting_area().dim_in_pixel().0 / u32::try_from(n).unwrap_or(u32::MAX);
    let k_all = u32::try_from(b.series.len()).unwrap_or(1).max(1);
    for (k, (label, values)) in b.series.iter().enumerate() {
        let colour = palette(k);
        let k32 = u32::try_from(k).unwrap_or(0);
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                let below: f64 = if b.stacked {
                    b.series[..k].iter().map(|(_, s)| s[i]).sum()
                } else {
                    0.0
                };
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), below),
                        (SegmentValue::Exact(i + 1), below + v),
                    ],
                    colour.filled(),
                );
                if b.stacked {
                    bar.set_margin(0, 0, w / 8, w / 8);
                } else {
                    let each = w * 3 / 4 / k_all;
                    let left = w / 8 + each * k32;
                    bar.set_margin(0, 0, left, w.saturating_sub(left + each));
                }
                bar
            }))?
            .label(label.as_ref())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    legend(&mut chart, b.legend.clone())
}

/// A y-axis tick: whole numbers from 100 up, otherwise up to three decimals.
fn tick(y: f64) -> String {
    if y.abs() >= 100.0 {
        format!("{y:.0}")
    } else {
        let t = format!("{y:.3}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The legend box, the same on every chart.
fn legend<'a, DB: DrawingBackend + 'a, C: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, C>,
    at: SeriesLabelPosition,
) -> DrawResult<DB> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 14))
        .position(at)
        .draw()
}

fn draw_err<E: std::fmt::Debug>(file: &Path, e: E) -> PlotError {
    PlotError::Draw {
        file: file.to_path_buf(),
        msg: format!("{e:?}"),
    }
}

/// Draws every chart of the run into `dir` as `<name>.svg` and `<name>.png` and returns the
/// files written. Charts: `pps-tx`, `pps-rx` (throughput by size), `cost-tx`, `cost-rx`
/// (operations per packet at 1500 B, or at the largest size measured), `staged-tx`,
/// `staged-rx` (share of packets staged per 10 ms at that size), `fill-tx`, `fill-rx` (the
/// data ring's mean fill per 10 ms at that size) and `rr`
/// (request/response), each only when the run measured it.
pub fn write_plots(r: &Results, dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    write_charts(charts(r), dir)
}

/// Draws a grouped bar chart into `dir` as `<name>.svg` and `<name>.png`: one group per
/// name, one bar per series (each series one value per name). Returns the files written.
pub fn write_bar_chart(
    dir: &Path,
    name: &str,
    caption: String,
    y_desc: &'static str,
    names: Vec<String>,
    series: Vec<(Cow<'static, str>, Vec<f64>)>,
) -> Result<Vec<PathBuf>, PlotError> {
    let bars = Bars {
        caption,
        y_desc,
        names,
        series,
        stacked: false,
        legend: SeriesLabelPosition::UpperRight,
    };
    write_charts(vec![(name.to_string(), Chart::Bars(bars))], dir)
}

fn write_charts(charts: Vec<(String, Chart)>, dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    font()?;
    let mut written = Vec::new();
    for (name, chart) in charts {
        let svg = dir.join(format!("{name}.svg"));
        {
            let area = SVGBackend::new(&svg, SIZE).into_drawing_area();
            chart.draw(&area).map_err(|e| draw_err(&svg, e))?;
            area.present().map_err(|e| draw_err(&svg, e))?;
        }
        written.push(svg);
        let png = dir.join(format!("{name}.png"));
        {
            let area = BitMapBackend::new(&png, SIZE).into_drawing_area();
            chart.draw(&area).map_err(|e| draw_err(&png, e))?;
            area.present().map_err(|e| draw_err(&png, e))?;
        }
        written.push(png);
    }
    Ok(written)
}
