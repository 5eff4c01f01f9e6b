//! A static SVG of the whole run: a time axis with units, idle stretches compressed (and
//! marked), labels placed only where they fit, and a legend of every mark drawn.

use crate::model::{Diagram, MarkKind, ORDERS};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Colours of the order classes (and, last, of state transfer).
pub(crate) const COLOURS: [&str; 7] = ["#9e9e9e", "#1e88e5", "#43a047", "#8e24aa", "#e53935", "#fb8c00", "#212121"];
const LEFT: f64 = 110.0;
const WIDTH: f64 = 1400.0;
const ROW: f64 = 44.0;
/// Room above the first line: the time axis.
const TOP: f64 = 46.0;
/// Above this many arrows, arrows between the same lines close in time are drawn as one.
pub(crate) const AGGREGATE_ABOVE: usize = 3000;
/// Width of a compressed idle stretch.
const GAP_PX: f64 = 18.0;
/// Text metrics (11 px sans-serif, generously: a label never runs into the next).
const CHAR_PX: f64 = 7.0;
const TEXT_H: f64 = 12.0;

pub(crate) fn group_colour(g: usize) -> String {
    format!("hsl({}, 70%, 50%)", (g * 137 + 200) % 360)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Maps run time to x, with stretches where nothing happens squeezed to `GAP_PX` each.
pub(crate) struct TimeScale {
    /// (start, end) of each idle stretch, in run microseconds.
    gaps: Vec<(u64, u64)>,
    /// Pixels per microsecond of busy time.
    per_us: f64,
    /// Microseconds of busy time.
    busy: u64,
}

impl TimeScale {
    /// Idle stretches are silences longer than a twentieth of the run (and 50 ms).
    pub(crate) fn new(d: &Diagram) -> Self {
        let mut times: Vec<u64> = d.at.iter().map(|(t, _)| *t).collect();
        times.sort_unstable();
        times.dedup();
        let least = (d.span / 20).max(50_000);
        let gaps: Vec<(u64, u64)> = times.windows(2).filter(|w| w[1] - w[0] > least).map(|w| (w[0], w[1])).collect();
        let idle: u64 = gaps.iter().map(|(a, b)| b - a).sum();
        let busy = (d.span - idle.min(d.span)).max(1);
        let per_us = (WIDTH - GAP_PX * gaps.len() as f64).max(WIDTH / 2.0) / busy as f64;
        Self { gaps, per_us, busy }
    }

    pub(crate) fn x(&self, t: u64) -> f64 {
        let mut x = LEFT;
        let mut from = 0;
        for &(a, b) in &self.gaps {
            if t <= a {
                break;
            }
            if t < b {
                // Inside a gap: spread over its few pixels.
                return x + (a - from) as f64 * self.per_us + GAP_PX * (t - a) as f64 / (b - a) as f64;
            }
            x += (a - from) as f64 * self.per_us + GAP_PX;
            from = b;
        }
        x + t.saturating_sub(from) as f64 * self.per_us
    }
}

/// Places text boxes without overlap: a label that would touch one already placed is
/// left out (its content stays in the hover titles).
#[derive(Default)]
struct Labels {
    placed: Vec<(f64, f64, f64, f64)>,
}

impl Labels {
    /// The box of `text` with its baseline at (`x`, `y`), if it fits.
    fn place(&mut self, x: f64, y: f64, text: &str) -> bool {
        let b = (x - 1.0, y - TEXT_H, x + text.chars().count() as f64 * CHAR_PX + 1.0, y + 3.0);
        if self.placed.iter().any(|p| b.0 < p.2 && p.0 < b.2 && b.1 < p.3 && p.1 < b.3) {
            return false;
        }
        self.placed.push(b);
        true
    }
}

/// A duration as a short label: "250 µs", "12 ms", "1.5 s".
fn human(us: u64) -> String {
    match us {
        0..=999 => format!("{us} µs"),
        1_000..=999_999 => {
            let ms = us as f64 / 1000.0;
            if ms < 10.0 && !us.is_multiple_of(1000) {
                format!("{ms:.1} ms")
            } else {
                format!("{:.0} ms", ms)
            }
        }
        _ => format!("{:.2} s", us as f64 / 1e6).replace(".00 s", " s"),
    }
}

/// A round tick step (1, 2 or 5 times a power of ten µs) giving about `want` ticks.
fn tick_step(span: u64, want: u64) -> u64 {
    let raw = (span / want.max(1)).max(1);
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            if step * m >= raw {
                return step * m;
            }
        }
        step *= 10;
    }
}

/// Renders `d` as one SVG document.
pub fn render_svg(d: &Diagram) -> String {
    let scale = TimeScale::new(d);
    let x = |t: u64| scale.x(t);
    let y = |r: usize| TOP + r as f64 * ROW;
    let legend_y = y(d.rows.len()) + 4.0;
    let mut labels = Labels::default();
    let mut body = String::new();
    let s = &mut body;
    s.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
    axis(s, d, &scale, &mut labels);
    for b in &d.bands {
        let off = (b.group % 3) as f64 * 4.0;
        let _ = write!(
            s,
            r#"<rect class="band" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}" fill-opacity="0.16"><title>{} view {}: {}</title></rect>"#,
            x(b.t0),
            y(b.row) - 14.0 + off,
            (x(b.t1) - x(b.t0)).max(1.0),
            20.0 - off,
            group_colour(b.group),
            esc(&d.groups[b.group]),
            b.view,
            esc(&b.members)
        );
    }
    for (r, name) in d.rows.iter().enumerate() {
        let _ = write!(
            s,
            r##"<line class="process" x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#444"/>"##,
            LEFT + WIDTH,
            y = y(r)
        );
        if labels.place(8.0, y(r) + 4.0, name) {
            let _ = write!(s, r#"<text class="label" x="8" y="{:.1}">{}</text>"#, y(r) + 4.0, esc(name));
        }
    }
    arrows(s, d, &x, &y);
    let mut used = [false; MarkKind::ALL.len()];
    for m in &d.marks {
        used[m.kind as usize] = true;
        mark(s, m.kind, x(m.t), y(m.row));
    }
    for f in &d.findings {
        for &k in &f.events {
            let (t, r) = d.at[k];
            let _ = write!(
                s,
                r#"<circle class="violation" cx="{:.1}" cy="{:.1}" r="9" fill="none" stroke="red" stroke-width="2.5"><title>{}</title></circle>"#,
                x(t),
                y(r),
                esc(&f.what)
            );
        }
    }
    // View labels ("g0 v5") above their band's start, where they fit.
    for b in &d.bands {
        let text = format!("{} v{}", d.groups[b.group], b.view);
        let (lx, ly) = (x(b.t0) + 2.0, y(b.row) - 16.0);
        if labels.place(lx, ly, &text) {
            let _ = write!(
                s,
                r#"<text class="label view-label" stroke="white" stroke-width="3" paint-order="stroke" x="{lx:.1}" y="{ly:.1}" font-size="10" fill="{}">{}</text>"#,
                group_colour(b.group),
                esc(&text)
            );
        }
    }
    let bottom = legend(s, d, used, legend_y, &mut labels);
    let height = bottom + 12.0;
    let w = LEFT + WIDTH + 20.0;
    let mut out = String::with_capacity(body.len() + 200);
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height:.0}" viewBox="0 0 {w} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    out.push_str(&body);
    out.push_str("</svg>\n");
    out
}

/// The time axis along the top: ticks in run time with units, and each compressed idle
/// stretch marked with how long it was.
fn axis(s: &mut String, d: &Diagram, scale: &TimeScale, labels: &mut Labels) {
    let ay = TOP - 30.0;
    let _ = write!(
        s,
        r##"<g class="axis"><line x1="{LEFT}" y1="{ay}" x2="{:.1}" y2="{ay}" stroke="#888"/>"##,
        LEFT + WIDTH
    );
    // About a dozen ticks over the time drawn at scale.
    let step = tick_step(scale.busy, 12);
    let mut t = 0;
    while t <= d.span {
        let idle = scale.gaps.iter().any(|&(a, b)| t > a && t < b);
        if !idle {
            let tx = scale.x(t);
            let _ = write!(s, r##"<line x1="{tx:.1}" y1="{ay}" x2="{tx:.1}" y2="{:.1}" stroke="#888"/>"##, ay + 4.0);
            let text = human(t);
            if labels.place(tx - 2.0, ay - 4.0, &text) {
                let _ = write!(s, r#"<text class="label tick" x="{:.1}" y="{:.1}">{text}</text>"#, tx - 2.0, ay - 4.0);
            }
        }
        t += step;
    }
    for &(a, b) in &scale.gaps {
        let (x0, x1) = (scale.x(a), scale.x(b));
        let mid = (x0 + x1) / 2.0;
        let _ = write!(
            s,
            r##"<path class="gap" d="M{:.1} {:.1} l3 -4 l3 8 l3 -4" stroke="#888" fill="none"/><rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#eeeeee"><title>{} idle, compressed</title></rect>"##,
            mid - 4.5,
            ay,
            TOP - 16.0,
            (x1 - x0).max(1.0),
            d.rows.len() as f64 * ROW,
            human(b - a)
        );
        let text = format!("≈{}", human(b - a));
        if labels.place(mid - 8.0, ay + 14.0, &text) {
            let _ = write!(
                s,
                r#"<text class="label gap-label" x="{:.1}" y="{:.1}" font-size="10">{text}</text>"#,
                mid - 8.0,
                ay + 14.0
            );
        }
    }
    s.push_str("</g>");
}

fn arrows(s: &mut String, d: &Diagram, x: &impl Fn(u64) -> f64, y: &impl Fn(usize) -> f64) {
    if d.arrows.len() <= AGGREGATE_ABOVE {
        for a in &d.arrows {
            let w = if a.kind == 6 { 3.0 } else { 0.7 };
            let _ = write!(
                s,
                r#"<line class="arrow" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="{w}" stroke-opacity="0.7"/>"#,
                x(a.t0),
                y(a.r0),
                x(a.t1),
                y(a.r1),
                COLOURS[a.kind as usize]
            );
        }
        return;
    }
    // (from line, to line, kind, a few px of time) -> (first send, its delivery, count)
    type Bucket = (usize, usize, u8, u64);
    let mut buckets: BTreeMap<Bucket, (u64, u64, u32)> = BTreeMap::new();
    // Wider buckets for bigger runs, so the file stays small.
    let px = if d.arrows.len() > 10 * AGGREGATE_ABOVE { 10.0 } else { 4.0 };
    for a in &d.arrows {
        let k = (a.r0, a.r1, a.kind, (x(a.t0) / px) as u64);
        let e = buckets.entry(k).or_insert((a.t0, a.t1, 0));
        e.2 += 1;
    }
    for ((r0, r1, kind, _), (t0, t1, n)) in buckets {
        let w = if kind == 6 { 3.0 } else { 0.5 + (n as f64).log2() * 0.5 };
        let _ = write!(
            s,
            r#"<line class="arrow" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="{w:.1}" stroke-opacity="0.5"><title>{n} messages</title></line>"#,
            x(t0),
            y(r0),
            x(t1),
            y(r1),
            COLOURS[kind as usize]
        );
    }
}

/// Draws one mark centred on (`mx`, `my`).
fn mark(s: &mut String, kind: MarkKind, mx: f64, my: f64) {
    let _ = match kind {
        MarkKind::View => write!(
            s,
            r##"<line class="mark view" x1="{mx:.1}" y1="{:.1}" x2="{mx:.1}" y2="{:.1}" stroke="#000"/>"##,
            my - 8.0,
            my + 8.0
        ),
        MarkKind::Crash => write!(
            s,
            r##"<path class="mark crash" d="M{:.1} {:.1} l12 12 m0 -12 l-12 12" stroke="#d50000" stroke-width="3"/>"##,
            mx - 6.0,
            my - 6.0
        ),
        MarkKind::SilentEnd => write!(
            s,
            r##"<path class="mark silent-end" d="M{:.1} {:.1} l12 12 m0 -12 l-12 12" stroke="#d50000" stroke-width="2" stroke-dasharray="3 2"/>"##,
            mx - 6.0,
            my - 6.0
        ),
        MarkKind::Partitioned => write!(
            s,
            r##"<rect class="mark partitioned" x="{:.1}" y="{:.1}" width="5" height="22" fill="#ff6d00"/>"##,
            mx - 2.5,
            my - 11.0
        ),
        MarkKind::Incarnation => write!(
            s,
            r##"<circle class="mark incarnation" cx="{mx:.1}" cy="{my:.1}" r="5" fill="white" stroke="#000" stroke-width="2"/>"##
        ),
        MarkKind::State => write!(
            s,
            r##"<rect class="mark state" x="{:.1}" y="{:.1}" width="8" height="8" fill="#212121"/>"##,
            mx - 4.0,
            my - 4.0
        ),
        MarkKind::Flush => {
            write!(s, r##"<circle class="mark flush" cx="{mx:.1}" cy="{my:.1}" r="2.5" fill="#555"/>"##)
        }
        MarkKind::Leave => write!(
            s,
            r##"<path class="mark leave" d="M{:.1} {:.1} l6 6 l-6 6" stroke="#00695c" stroke-width="2" fill="none"/>"##,
            mx - 3.0,
            my - 6.0
        ),
    };
}

/// The legend under the lines: every order class drawn, state transfer, every mark
/// drawn, and violations when there are some; wrapped so nothing overlaps. Returns its
/// bottom.
fn legend(s: &mut String, d: &Diagram, used: [bool; MarkKind::ALL.len()], top: f64, labels: &mut Labels) -> f64 {
    let mut kinds = [false; 7];
    for a in &d.arrows {
        kinds[a.kind as usize] = true;
    }
    let (mut lx, mut ly) = (LEFT, top + 18.0);
    let mut entry = |s: &mut String, name: &str, draw: &dyn Fn(&mut String, f64, f64)| {
        let w = 36.0 + name.chars().count() as f64 * CHAR_PX + 16.0;
        if lx + w > LEFT + WIDTH {
            lx = LEFT;
            ly += 22.0;
        }
        draw(s, lx + 12.0, ly - 4.0);
        if labels.place(lx + 30.0, ly, name) {
            let _ = write!(s, r#"<text class="label legend" x="{:.1}" y="{ly:.1}">{}</text>"#, lx + 30.0, esc(name));
        }
        lx += w;
    };
    s.push_str(r#"<g class="legend-box">"#);
    for (k, name) in ORDERS.iter().chain(["state transfer"].iter()).enumerate().filter(|(k, _)| kinds[*k]) {
        let colour = COLOURS[k];
        entry(s, name, &|s, x, y| {
            let _ = write!(
                s,
                r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="3"/>"#,
                x - 12.0,
                x + 12.0
            );
        });
    }
    for kind in MarkKind::ALL.into_iter().filter(|k| used[*k as usize]) {
        entry(s, kind.meaning(), &|s, x, y| mark(s, kind, x, y));
    }
    if !d.findings.is_empty() {
        entry(s, "checker violation", &|s, x, y| {
            let _ = write!(s, r#"<circle cx="{x:.1}" cy="{y:.1}" r="7" fill="none" stroke="red" stroke-width="2.5"/>"#);
        });
    }
    if !d.bands.is_empty() {
        entry(s, "membership in a view (group colour)", &|s, x, y| {
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="24" height="10" fill="{}" fill-opacity="0.3"/>"#,
                x - 12.0,
                y - 5.0,
                group_colour(0)
            );
        });
    }
    s.push_str("</g>");
    ly + 8.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_units_and_ticks_are_round() {
        assert_eq!(human(250), "250 µs");
        assert_eq!(human(12_000), "12 ms");
        assert_eq!(human(1_500), "1.5 ms");
        assert_eq!(human(1_500_000), "1.50 s");
        assert_eq!(human(2_000_000), "2 s");
        assert_eq!(tick_step(10_000_000, 12), 1_000_000);
        assert_eq!(tick_step(3_000, 12), 500);
    }

    #[test]
    fn labels_that_would_touch_are_left_out() {
        let mut l = Labels::default();
        assert!(l.place(0.0, 20.0, "g0 v5"));
        assert!(!l.place(10.0, 22.0, "g2 v2"), "overlaps the first");
        assert!(l.place(100.0, 22.0, "g2 v2"));
        assert!(l.place(10.0, 60.0, "g2 v2"));
    }
}
