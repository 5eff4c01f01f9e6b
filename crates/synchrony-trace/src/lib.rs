//! # synchrony-trace
//!
//! The trace format of synchrony (`shared/TRACE.md`, a public interface): one JSON line per
//! event a process did, in its order. The simulator and the runtime record traces with
//! [`Recorder`] and the mapping of engine events in [`TraceEvent::of_engine`]; the checker
//! (`synchrony-check`) and the diagrams (`synchrony-viz`) read them with [`parse`].
//!
//! ```
//! use synchrony_trace::{parse, EventKind};
//! let line = r#"{"p":"n1#1","i":0,"t":0,"ev":"view","group":"g","view":1,"members":["n1#1"],"primary":true}"#;
//! let events = parse(line).unwrap();
//! assert_eq!(events[0].ev, EventKind::View);
//! assert_eq!(events[0].to_json_line(), line);
//! ```

mod event;
mod record;

pub use event::{EventKind, TraceEvent, DELIVERED_SET};
pub use record::Recorder;

/// A line that is not a trace event.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub error: String,
}

/// Parses JSON Lines (blank lines are skipped). A torn last line (a process killed in the
/// middle of writing it) is dropped; anything else that is not an event is an error.
pub fn parse(text: &str) -> Result<Vec<TraceEvent>, ParseError> {
    let mut out = Vec::new();
    let lines = text.lines().count();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<TraceEvent>(line) {
            Ok(e) => out.push(e),
            Err(_) if n + 1 == lines && !text.ends_with('\n') => break,
            Err(e) => return Err(ParseError { line: n + 1, error: e.to_string() }),
        }
    }
    Ok(out)
}

/// The digest of a workload state (a set of message ids): 64-bit FNV-1a over the ids in
/// sorted order, each followed by a newline, as 16 lowercase hex digits. The simulator and
/// `synchrony load` use it, so the checker can recompute what a digest must be.
pub fn digest<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut v: Vec<&str> = ids.into_iter().collect();
    v.sort_unstable();
    let mut h = synchrony_engine::Fnv1a::new();
    for id in v {
        h.write(id.as_bytes());
        h.write(b"\n");
    }
    format!("{:016x}", h.finish())
}

/// The lines of a state whose lines are message ids (a workload state: see [`digest`]),
/// gathered from its bytes fed in parts cut anywhere; empty lines are skipped.
#[derive(Debug, Default)]
pub struct LineSet {
    lines: std::collections::BTreeSet<String>,
    /// The start of a line that a later part ends.
    partial: Vec<u8>,
}

impl LineSet {
    /// Feeds the next bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            self.partial.extend_from_slice(piece);
            if self.partial.last() == Some(&b'\n') {
                if self.partial.len() > 1 {
                    self.lines.insert(String::from_utf8_lossy(&self.partial[..self.partial.len() - 1]).into_owned());
                }
                self.partial.clear();
            }
        }
    }

    /// Every line (a last one with no newline after it too).
    pub fn into_lines(mut self) -> std::collections::BTreeSet<String> {
        if !self.partial.is_empty() {
            self.lines.insert(String::from_utf8_lossy(&self.partial).into_owned());
        }
        self.lines
    }

    /// [`digest`] of the lines so far (a last one with no newline after it too).
    pub fn digest(&self) -> String {
        let last = Some(String::from_utf8_lossy(&self.partial).into_owned())
            .filter(|l| !l.is_empty() && !self.lines.contains(l));
        digest(self.lines.iter().map(String::as_str).chain(last.as_deref()))
    }
}
