//! A static SVG of the whole run.

use crate::model::{Diagram, MarkKind, ORDERS};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Colours of the order classes (and, last, of state transfer).
pub(crate) const COLOURS: [&str; 7] = ["#9e9e9e", "#1e88e5", "#43a047", "#8e24aa", "#e53935", "#fb8c00", "#212121"];
const LEFT: f64 = 110.0;
const WIDTH: f64 = 1400.0;
const ROW: f64 = 44.0;
/// Above this many arrows, arrows between the same lines close in time are drawn as one.
pub(crate) const AGGREGATE_ABOVE: usize = 3000;

pub(crate) fn group_colour(g: usize) -> String {
    format!("hsl({}, 70%, 50%)", (g * 137 + 200) % 360)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Renders `d` as one SVG document.
pub fn render_svg(d: &Diagram) -> String {
    let x = |t: u64| LEFT + t as f64 / d.span as f64 * WIDTH;
    let y = |r: usize| 30.0 + r as f64 * ROW;
    let height = y(d.rows.len()) + 40.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}" font-family="sans-serif" font-size="11">"#,
        w = LEFT + WIDTH + 20.0
    );
    s.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
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
            r##"<line class="process" x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#444"/><text x="8" y="{:.1}">{}</text>"##,
            LEFT + WIDTH,
            y(r) + 4.0,
            esc(name),
            y = y(r)
        );
    }
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
    } else {
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
                r#"<line class="arrow" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="{w:.1}" stroke-opacity="0.5"/>"#,
                x(t0),
                y(r0),
                x(t1),
                y(r1),
                COLOURS[kind as usize]
            );
        }
    }
    for m in &d.marks {
        let (mx, my) = (x(m.t), y(m.row));
        let _ = match m.kind {
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
            MarkKind::Flush | MarkKind::Leave => {
                write!(s, r##"<circle class="mark" cx="{mx:.1}" cy="{my:.1}" r="2.5" fill="#555"/>"##)
            }
        };
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
    let ly = height - 14.0;
    for (k, name) in ORDERS.iter().chain(["state transfer"].iter()).enumerate() {
        let lx = LEFT + k as f64 * 120.0;
        let _ = write!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="3"/><text x="{}" y="{}">{name}</text>"#,
            lx + 24.0,
            COLOURS[k],
            lx + 30.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}
