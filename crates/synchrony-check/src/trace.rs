//! The trace format of `shared/TRACE.md`: JSON Lines, one event per line.

use serde::Deserialize;
use std::fmt::Write as _;

/// One trace event. Fields not used by an event kind are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct TraceEvent {
    /// The process, `NAME#INCARNATION`.
    pub p: String,
    /// The process's event counter.
    pub i: u64,
    /// Microseconds (virtual in simulation, since the Unix epoch in real runs).
    pub t: u64,
    /// The kind: view, send, deliver, state_sent, state, flush, leave, partitioned, crash.
    pub ev: String,
    /// The group.
    #[serde(default)]
    pub group: Option<String>,
    /// A view id (null for a non-member's send).
    #[serde(default)]
    pub view: Option<u64>,
    /// View members, oldest first.
    #[serde(default)]
    pub members: Option<Vec<String>>,
    /// Whether the view is primary.
    #[serde(default)]
    pub primary: Option<bool>,
    /// Message id, `SENDER/COUNTER`.
    #[serde(default)]
    pub msg: Option<String>,
    /// Order class.
    #[serde(default)]
    pub order: Option<String>,
    /// A delivered message's sender.
    #[serde(default)]
    pub from: Option<String>,
    /// A state transfer's joiner.
    #[serde(default)]
    pub to: Option<String>,
    /// A state digest.
    #[serde(default)]
    pub digest: Option<String>,
    /// Optional, on `flush`: the last message the caller had sent to the group when it
    /// called `flush()`, or `""` if it had sent none (an extension of TRACE.md; without it
    /// every earlier send counts).
    #[serde(default)]
    pub covers: Option<String>,
}

fn s(out: &mut String, k: &str, v: &str) {
    let _ = write!(out, ",\"{k}\":{}", serde_json::Value::String(v.to_string()));
}

impl TraceEvent {
    /// The event as one line of JSON, fields in the order TRACE.md lists them.
    pub fn to_json_line(&self) -> String {
        let mut out = String::with_capacity(128);
        out.push_str("{\"p\":");
        out.push_str(&serde_json::Value::String(self.p.clone()).to_string());
        let _ = write!(out, ",\"i\":{},\"t\":{}", self.i, self.t);
        s(&mut out, "ev", &self.ev);
        let view = |out: &mut String| match self.view {
            Some(v) => {
                let _ = write!(out, ",\"view\":{v}");
            }
            None => out.push_str(",\"view\":null"),
        };
        let group = |out: &mut String| s(out, "group", self.group.as_deref().unwrap_or(""));
        match self.ev.as_str() {
            "view" => {
                group(&mut out);
                view(&mut out);
                let members = serde_json::to_string(self.members.as_deref().unwrap_or(&[])).unwrap_or_default();
                let _ = write!(out, ",\"members\":{members},\"primary\":{}", self.primary.unwrap_or(true));
            }
            "send" => {
                group(&mut out);
                s(&mut out, "msg", self.msg.as_deref().unwrap_or(""));
                s(&mut out, "order", self.order.as_deref().unwrap_or(""));
                view(&mut out);
            }
            "deliver" => {
                group(&mut out);
                s(&mut out, "msg", self.msg.as_deref().unwrap_or(""));
                s(&mut out, "from", self.from.as_deref().unwrap_or(""));
                s(&mut out, "order", self.order.as_deref().unwrap_or(""));
                view(&mut out);
            }
            "state_sent" => {
                group(&mut out);
                view(&mut out);
                s(&mut out, "to", self.to.as_deref().unwrap_or(""));
                s(&mut out, "digest", self.digest.as_deref().unwrap_or(""));
            }
            "state" => {
                group(&mut out);
                view(&mut out);
                s(&mut out, "digest", self.digest.as_deref().unwrap_or(""));
            }
            "flush" => {
                group(&mut out);
                view(&mut out);
                if let Some(c) = &self.covers {
                    s(&mut out, "covers", c);
                }
            }
            "leave" => group(&mut out),
            _ => {}
        }
        out.push('}');
        out
    }
}

/// A line that is not a trace event.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub error: String,
}

/// Parses JSON Lines (blank lines are skipped).
pub fn parse(text: &str) -> Result<Vec<TraceEvent>, ParseError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<TraceEvent>(line) {
            Ok(e) => out.push(e),
            Err(e) => {
                // A process killed mid-write leaves a torn last line; anything else is an error.
                if n + 1 == text.lines().count() && !text.ends_with('\n') {
                    break;
                }
                return Err(ParseError { line: n + 1, error: e.to_string() });
            }
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
    let mut h: u64 = 0xcbf29ce484222325;
    for id in v {
        for b in id.bytes().chain(std::iter::once(b'\n')) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}

/// Constructors for each event kind; `p`, `i` and `t` are left for the recorder to fill.
impl TraceEvent {
    fn kind(ev: &str, group: Option<&str>) -> Self {
        Self { ev: ev.into(), group: group.map(String::from), ..Default::default() }
    }

    /// `view`: the process installs view `view` of `group`.
    pub fn view_installed(group: &str, view: u64, members: Vec<String>) -> Self {
        Self { view: Some(view), members: Some(members), primary: Some(true), ..Self::kind("view", Some(group)) }
    }

    /// `send`: the application hands `msg` to the system (`view` is `None` for a non-member).
    pub fn sent(group: &str, msg: String, order: &str, view: Option<u64>) -> Self {
        Self { msg: Some(msg), order: Some(order.into()), view, ..Self::kind("send", Some(group)) }
    }

    /// `deliver`: the system delivers `msg` from `from` in `view`.
    pub fn delivered(group: &str, msg: String, from: String, order: &str, view: u64) -> Self {
        Self {
            msg: Some(msg),
            from: Some(from),
            order: Some(order.into()),
            view: Some(view),
            ..Self::kind("deliver", Some(group))
        }
    }

    /// `state_sent`: a checkpoint with `digest` produced for joiner `to`, whose first view is `view`.
    pub fn state_sent(group: &str, view: u64, to: String, digest: String) -> Self {
        Self { view: Some(view), to: Some(to), digest: Some(digest), ..Self::kind("state_sent", Some(group)) }
    }

    /// `state`: a joiner loaded its initial state.
    pub fn state_loaded(group: &str, view: u64, digest: String) -> Self {
        Self { view: Some(view), digest: Some(digest), ..Self::kind("state", Some(group)) }
    }

    /// `flush`: a `flush()` call returned; `covers` is the last message sent before it.
    pub fn flushed(group: &str, view: u64, covers: Option<String>) -> Self {
        Self { view: Some(view), covers, ..Self::kind("flush", Some(group)) }
    }

    /// `leave`: the process left `group`.
    pub fn left(group: &str) -> Self {
        Self::kind("leave", Some(group))
    }

    /// `partitioned` or `crash`: events with no fields of their own.
    pub fn bare(ev: &str) -> Self {
        Self::kind(ev, None)
    }
}
