//! One self-contained HTML page: the diagram's data, a canvas renderer with zoom, pan,
//! filters and hover, and the list of violations. Nothing is fetched from the network.

use crate::model::Diagram;

const SCRIPT: &str = include_str!("viz.js");

/// Renders `d` as an HTML page titled `title`.
pub fn render_html(d: &Diagram, title: &str) -> String {
    // `</` must not appear inside the script element.
    let data = serde_json::to_string(d).unwrap_or_else(|_| "{}".into()).replace("</", "<\\/");
    let title = title.replace('&', "&amp;").replace('<', "&lt;");
    format!(
        r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 10px; }}
#filters label {{ margin-right: 10px; font-size: 12px; }}
#legend span {{ margin-right: 14px; font-size: 12px; font-weight: bold; }}
#tip {{ position: absolute; display: none; background: #fffde7; border: 1px solid #999; padding: 4px;
        font: 11px monospace; max-width: 640px; word-break: break-all; pointer-events: none; }}
.finding {{ color: #b71c1c; cursor: pointer; font-size: 13px; }}
canvas {{ border: 1px solid #ccc; cursor: grab; }}
</style></head>
<body>
<h3>{title}</h3>
<p style="font-size:12px">{events} events, {procs} processes, {groups} groups, {ms:.1} ms. Wheel: zoom. Drag: pan.
Marks: | view installed, &#x2715; crash (dashed: the trace just ends and later views exclude it), &#x25AE; partitioned (stopped), &#x25CB; new incarnation, &#x25A0; state loaded,
&#x203A; left the group, &#x2022; flush returned, red circle: a checker violation. The axis is run time since the first event. <button id="reset">reset</button></p>
<div id="filters"></div><div id="legend"></div>
<canvas id="c"></canvas>
<h4>Checker</h4><ul id="findings"></ul>
<div id="tip"></div>
<script>const DATA = {data};</script>
<script>{SCRIPT}</script>
</body></html>
"#,
        events = d.lines.len(),
        procs = d.rows.len(),
        groups = d.groups.len(),
        ms = d.span as f64 / 1000.0,
    )
}
