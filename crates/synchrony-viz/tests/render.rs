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
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|c| {
        let out = std::process::Command::new("which").arg(c).output().ok()?;
        out.status.success().then(|| std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
}

#[test]
fn the_page_renders_in_headless_chromium_without_script_errors() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("SYNCHRONY_REQUIRE_BROWSER").is_none(),
            "SYNCHRONY_REQUIRE_BROWSER is set but no chromium is installed"
        );
        eprintln!("skipped: no chromium (install the Debian package `chromium` to run this test)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("synchrony-viz-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let page = dir.join("run.html");
    let (d, _) = diagram();
    std::fs::write(&page, render_html(&d, "test")).expect("writes");
    let url = format!("file://{}", page.display());
    let run = |extra: &[&str]| {
        std::process::Command::new(&browser)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .args(["--window-size=1200,600", "--enable-logging=stderr", "--v=0"])
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium runs")
    };
    // The script marks the body when it ran to its end; a script error leaves it unmarked.
    let dom = run(&["--dump-dom"]);
    let text = String::from_utf8_lossy(&dom.stdout);
    let log = String::from_utf8_lossy(&dom.stderr);
    assert!(text.contains(r#"data-rendered="yes""#), "the script did not finish:\n{log}");
    assert!(!log.contains("Uncaught"), "script error:\n{log}");
    assert!(text.contains("G3 violated"), "the violation is listed on the page");
    let shot = dir.join("shot.png");
    let out = run(&[&format!("--screenshot={}", shot.display())]);
    let png =
        std::fs::read(&shot).unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5000, "the screenshot is empty");
    let _ = std::fs::remove_dir_all(&dir);
}
