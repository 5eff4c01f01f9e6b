//! `synchrony node --metrics ADDR` serves Prometheus text that parses.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn scrape(addr: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Checks the Prometheus text exposition format, line by line.
fn parse_prometheus(body: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix('#') {
            let kind = rest.split_whitespace().next().unwrap_or("");
            assert!(kind == "HELP" || kind == "TYPE", "bad comment line: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let name = series.split('{').next().unwrap_or("");
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .enumerate()
                    .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())),
            "bad metric name in: {line}"
        );
        if series.contains('{') {
            assert!(series.ends_with('}'), "bad labels in: {line}");
        }
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in: {line}"));
        samples.push((name.to_string(), v));
    }
    samples
}

#[test]
fn a_node_serves_prometheus_metrics() {
    let listen = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut node = Command::new(env!("CARGO_BIN_EXE_synchrony"))
        .args(["node", "--name", "m1", "--listen", &listen, "--join", "g", "--metrics", &metrics])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut found = None;
    while Instant::now() < deadline {
        // Until the group's first view is counted (the endpoint may answer before it).
        let counted = |b: &String| b.lines().any(|l| l.starts_with("synchrony_views_total ") && !l.ends_with(" 0"));
        if let Some(body) = scrape(&metrics).filter(counted) {
            found = Some(body);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = Command::new("kill").arg(node.id().to_string()).status();
    let _ = node.wait();
    let body = found.expect("the endpoint served the node's metrics");
    let samples = parse_prometheus(&body);
    let get = |n: &str| samples.iter().find(|(m, _)| m == n).map(|(_, v)| *v);
    assert_eq!(get("synchrony_members"), Some(1.0));
    assert!(get("synchrony_views_total").is_some_and(|v| v >= 1.0), "{body}");
    assert!(body.contains("# TYPE synchrony_delivered_total counter"), "{body}");
    assert!(get("synchrony_quiet_views_total").is_some(), "{body}");
}
