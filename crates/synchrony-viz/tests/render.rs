//! Renders known traces and checks what the diagram holds; opens the HTML in headless
//! Chromium when it is installed (CI installs it and sets SYNCHRONY_REQUIRE_BROWSER=1).

use synchrony_check::{check, Options};
use synchrony_trace::parse;
use synchrony_viz::{render_html, render_svg, Diagram, MarkKind};

/// Three processes; `c` joins with a state transfer, `b` crashes, and `m2` is delivered in
/// view 2 by `a` but in view 3 by `c` (a G3 violation).
const TRACE: &str = r#"{"p":"a#1","i":0,"t":0,"ev":"view","group":"g","view":1,"members":["a#1","b#1"],"primary":true}
{"p":"b#1","i":0,"t":2,"ev":"view","group":"g","view":1,"members":["a#1","b#1"],"primary":true}
{"p":"a#1","i":1,"t":10,"ev":"send","group":"g","msg":"a#1/0","order":"total","view":1}
{"p":"a#1","i":2,"t":11,"ev":"deliver","group":"g","msg":"a#1/0","from":"a#1","order":"total","view":1}
{"p":"b#1","i":1,"t":14,"ev":"deliver","group":"g","msg":"a#1/0","from":"a#1","order":"total","view":1}
{"p":"a#1","i":3,"t":20,"ev":"state_sent","group":"g","view":2,"to":"c#1","digest":"d1"}
{"p":"a#1","i":4,"t":21,"ev":"view","group":"g","view":2,"members":["a#1","b#1","c#1"],"primary":true}
{"p":"b#1","i":2,"t":22,"ev":"view","group":"g","view":2,"members":["a#1","b#1","c#1"],"primary":true}
{"p":"c#1","i":0,"t":23,"ev":"view","group":"g","view":2,"members":["a#1","b#1","c#1"],"primary":true}
{"p":"c#1","i":1,"t":25,"ev":"state","group":"g","view":2,"digest":"d1"}
{"p":"b#1","i":3,"t":30,"ev":"send","group":"g","msg":"b#1/0","order":"fifo","view":2}
{"p":"b#1","i":4,"t":31,"ev":"crash"}
{"p":"a#1","i":5,"t":33,"ev":"deliver","group":"g","msg":"b#1/0","from":"b#1","order":"fifo","view":2}
{"p":"a#1","i":6,"t":40,"ev":"view","group":"g","view":3,"members":["a#1","c#1"],"primary":true}
{"p":"c#1","i":2,"t":41,"ev":"view","group":"g","view":3,"members":["a#1","c#1"],"primary":true}
{"p":"c#1","i":3,"t":42,"ev":"deliver","group":"g","msg":"b#1/0","from":"b#1","order":"fifo","view":3}
{"p":"b#2","i":0,"t":50,"ev":"partitioned"}"#;

fn diagram() -> (Diagram, usize) {
    let events = parse(TRACE).expect("parses");
    let report = check(&events, &Options::default());
    (Diagram::new(&events, &report.violations), report.violations.len())
}

#[test]
fn the_diagram_holds_lines_bands_arrows_marks_and_violations() {
    let (d, violations) = diagram();
    assert!(violations > 0, "the trace has a G3 violation");
    assert_eq!(d.rows, vec!["a", "b", "c"]);
    // Two deliveries of each message, drawn from their sends, plus the state transfer.
    assert_eq!(d.arrows.len(), 5);
    assert_eq!(d.arrows.iter().filter(|a| a.kind == 6).count(), 1);
    // a: views 1, 2, 3; b: views 1, 2 (closed by the crash); c: views 2, 3.
    assert_eq!(d.bands.len(), 7);
    let count = |k: MarkKind| d.marks.iter().filter(|m| m.kind == k).count();
    assert_eq!((count(MarkKind::Crash), count(MarkKind::Partitioned), count(MarkKind::Incarnation)), (1, 1, 1));
    assert_eq!(count(MarkKind::State), 1);
    assert!(d.findings.iter().any(|f| f.what.starts_with("G3") && f.events.len() >= 2));

    let svg = render_svg(&d);
    assert_eq!(svg.matches(r#"class="process""#).count(), 3);
    assert_eq!(svg.matches(r#"class="arrow""#).count(), 5);
    assert_eq!(svg.matches(r#"class="band""#).count(), 7);
    assert!(svg.matches(r#"class="violation""#).count() >= 2);
    assert!(svg.contains("crash"));
}

#[test]
fn the_page_is_self_contained() {
    let (d, _) = diagram();
    let html = render_html(&d, "test");
    assert!(html.contains("<canvas") && html.contains("const DATA = "));
    for fetch in ["src=\"http", "href=\"http", "@import", "fetch("] {
        assert!(!html.contains(fetch), "the page must not fetch anything ({fetch})");
    }
}

fn chromium() -> Option<std::path::PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|c| {
        let out = std::process::Command::new("which").arg(c).output().ok()?;
        out.status.success().then(|| std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    if found.is_none() {
        assert!(
            std::env::var_os("SYNCHRONY_REQUIRE_BROWSER").is_none(),
            "SYNCHRONY_REQUIRE_BROWSER is set but no chromium is installed"
        );
        eprintln!("skipped: no chromium (install the Debian package `chromium` to run this test)");
    }
    found
}

/// Opens `page` in headless Chromium with `extra` flags (a profile of its own in `dir`).
fn open(
    browser: &std::path::Path,
    dir: &std::path::Path,
    page: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(["--window-size=1600,900", "--enable-logging=stderr", "--v=0"])
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs")
}

fn temp_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("synchrony-viz-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn the_page_renders_in_headless_chromium_without_script_errors() {
    let Some(browser) = chromium() else { return };
    let dir = temp_dir("page");
    let page = dir.join("run.html");
    let (d, _) = diagram();
    std::fs::write(&page, render_html(&d, "test")).expect("writes");
    // The script marks the body when it ran to its end; a script error leaves it unmarked.
    let dom = open(&browser, &dir, &page, &["--dump-dom"]);
    let text = String::from_utf8_lossy(&dom.stdout);
    let log = String::from_utf8_lossy(&dom.stderr);
    assert!(text.contains(r#"data-rendered="yes""#), "the script did not finish:\n{log}");
    assert!(!log.contains("Uncaught"), "script error:\n{log}");
    assert!(text.contains("G3 violated"), "the violation is listed on the page");
    let shot = dir.join("shot.png");
    let out = open(&browser, &dir, &page, &[&format!("--screenshot={}", shot.display())]);
    let png =
        std::fs::read(&shot).unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5000, "the screenshot is empty");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The SVG of a simulated run of over 10,000 events, with a 3 s idle stretch, laid out by
/// Chromium: no two labels' boxes overlap, the time axis has ticks with units and marks
/// the idle stretch, and the legend names every mark drawn.
#[test]
fn a_large_runs_svg_has_an_axis_a_full_legend_and_no_overlapping_labels() {
    let mut events = Vec::new();
    for seed in 0.. {
        let out = synchrony_sim::run(synchrony_sim::SimConfig::new(
            seed,
            synchrony_sim::Profile::named("chaos").expect("profile"),
        ));
        if out.trace.len() >= 10_000 {
            events = out.trace;
            break;
        }
    }
    // Nothing happens for 3 s before the last tenth of the run.
    let end = events.iter().map(|e| e.t).max().expect("events");
    let cut = end - end / 10;
    for e in events.iter_mut().filter(|e| e.t > cut) {
        e.t += 3_000_000;
    }
    let report = check(&events, &Options::default());
    let d = Diagram::new(&events, &report.violations);
    let svg = render_svg(&d);
    assert!(svg.contains(r#"class="gap""#), "the idle stretch is compressed and marked");
    assert!(svg.contains("≈3"), "with how long it was");
    let Some(browser) = chromium() else { return };
    let dir = temp_dir("large");
    let page = dir.join("large.html");
    let script = r#"<script>
const boxes = [...document.querySelectorAll('text.label')].map(t => t.getBBox());
let overlaps = [];
for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
  const a = boxes[i], b = boxes[j];
  if (a.x + 0.5 < b.x + b.width && b.x + 0.5 < a.x + a.width && a.y + 0.5 < b.y + b.height && b.y + 0.5 < a.y + a.height)
    overlaps.push(i + ':' + j);
}
document.body.setAttribute('data-labels', boxes.length);
document.body.setAttribute('data-overlaps', overlaps.length ? overlaps.slice(0, 5).join(',') : 'none');
document.body.setAttribute('data-ticks', document.querySelectorAll('g.axis text.tick').length);
document.body.setAttribute('data-legend', [...document.querySelectorAll('text.legend')].map(t => t.textContent).join('|'));
</script>"#;
    std::fs::write(&page, format!("<!DOCTYPE html><html><body>{svg}{script}</body></html>")).expect("writes");
    let dom = open(&browser, &dir, &page, &["--dump-dom"]);
    let text = String::from_utf8_lossy(&dom.stdout).to_string();
    let attr = |name: &str| -> String {
        let k = format!("{name}=\"");
        let at =
            text.find(&k).unwrap_or_else(|| panic!("no {name} in the page: {}", String::from_utf8_lossy(&dom.stderr)));
        text[at + k.len()..].split('"').next().unwrap_or_default().to_string()
    };
    assert_eq!(attr("data-overlaps"), "none", "labels overlap");
    assert!(attr("data-labels").parse::<usize>().expect("count") > 20, "labels were drawn");
    assert!(attr("data-ticks").parse::<usize>().expect("count") >= 5, "a time axis with ticks: {}", attr("data-ticks"));
    assert!(svg.contains(" ms<") || svg.contains(" s<"), "ticks carry units");
    let legend = attr("data-legend");
    for kind in synchrony_viz::MarkKind::ALL.into_iter().filter(|k| d.marks.iter().any(|m| m.kind == *k)) {
        assert!(legend.contains(kind.meaning()), "the legend lacks {kind:?}: {legend}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A process whose trace just ends (SIGKILLed) and which later views exclude is drawn as
/// crashed there, as the checker takes it: its band ends with its last event, and a mark
/// says so (not alive to the end of the run).
#[test]
fn a_trace_that_just_ends_is_drawn_as_a_crash() {
    let trace = r#"{"p":"a#1","i":0,"t":0,"ev":"view","group":"g","view":1,"members":["a#1","b#1"],"primary":true}
{"p":"b#1","i":0,"t":2,"ev":"view","group":"g","view":1,"members":["a#1","b#1"],"primary":true}
{"p":"b#1","i":1,"t":5,"ev":"send","group":"g","msg":"b#1/0","order":"fifo","view":1}
{"p":"a#1","i":1,"t":6,"ev":"deliver","group":"g","msg":"b#1/0","from":"b#1","order":"fifo","view":1}
{"p":"b#1","i":2,"t":7,"ev":"deliver","group":"g","msg":"b#1/0","from":"b#1","order":"fifo","view":1}
{"p":"a#1","i":2,"t":100,"ev":"view","group":"g","view":2,"members":["a#1"],"primary":true}"#;
    let events = parse(trace).expect("parses");
    let report = check(&events, &Options { quiescent: true, ..Options::default() });
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    let d = Diagram::of_report(&events, &report);
    let ends: Vec<_> = d.marks.iter().filter(|m| m.kind == MarkKind::SilentEnd).collect();
    assert_eq!(ends.len(), 1);
    assert_eq!((ends[0].t, d.rows[ends[0].row].as_str()), (7, "b"));
    let b_band = d.bands.iter().find(|band| d.rows[band.row] == "b").expect("b's band");
    assert_eq!(b_band.t1, 7, "b's view band ends where its trace does, not at the end of the run");
    assert!(render_svg(&d).contains("silent-end"));
    // Without the report's inferences, b looks alive to the end.
    let plain = Diagram::new(&events, &report.violations);
    assert!(plain.marks.iter().all(|m| m.kind != MarkKind::SilentEnd));
}
