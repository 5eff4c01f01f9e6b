//! One trace event, its kinds, and its JSON line.

use serde::{Deserialize, Deserializer};
use std::fmt::Write as _;
use synchrony_engine::{Event, Order};

/// What a trace event records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The process installs a view of a group.
    View,
    /// The application hands a multicast to the system.
    Send,
    /// The system delivers a multicast to the application.
    Deliver,
    /// A member produced the checkpoint for a joiner.
    StateSent,
    /// A joiner loaded its initial state.
    State,
    /// A `flush()` call returned.
    Flush,
    /// The process left a group voluntarily.
    Leave,
    /// The process stopped: excluded, or cut off from a majority.
    Partitioned,
    /// The process crashed or was killed.
    Crash,
    /// A kind this version does not know (traces may come from a newer one).
    #[default]
    #[serde(other)]
    Unknown,
}

impl EventKind {
    /// The name in traces.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::View => "view",
            EventKind::Send => "send",
            EventKind::Deliver => "deliver",
            EventKind::StateSent => "state_sent",
            EventKind::State => "state",
            EventKind::Flush => "flush",
            EventKind::Leave => "leave",
            EventKind::Partitioned => "partitioned",
            EventKind::Crash => "crash",
            EventKind::Unknown => "unknown",
        }
    }
}

/// One trace event. Fields not used by an event kind are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct TraceEvent {
    /// The process, `NAME#INCARNATION`.
    pub p: String,
    /// The process's event counter.
    pub i: u64,
    /// Microseconds (virtual in simulation, since the Unix epoch in real runs).
    pub t: u64,
    /// The kind.
    pub ev: EventKind,
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
    #[serde(default, deserialize_with = "order")]
    pub order: Option<Order>,
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
    /// Optional, on `state_sent` and `state`: what the state holds, when the application
    /// says so (an extension of TRACE.md). `"delivered"`: the ids of the messages the
    /// provider had delivered in the group, so the checker can recompute the digest
    /// (G11); without it the state is the application's own and only its transfer is
    /// checked.
    #[serde(default)]
    pub content: Option<String>,
}

/// The `content` of a state that is the set of delivered message ids.
pub const DELIVERED_SET: &str = "delivered";

fn order<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Order>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| s.parse().map_err(serde::de::Error::custom)).transpose()
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
        s(&mut out, "ev", self.ev.as_str());
        let view = |out: &mut String| match self.view {
            Some(v) => {
                let _ = write!(out, ",\"view\":{v}");
            }
            None => out.push_str(",\"view\":null"),
        };
        let group = |out: &mut String| s(out, "group", self.group.as_deref().unwrap_or(""));
        let order = self.order.map_or("", Order::as_str);
        match self.ev {
            EventKind::View => {
                group(&mut out);
                view(&mut out);
                let members = serde_json::to_string(self.members.as_deref().unwrap_or(&[])).unwrap_or_default();
                let _ = write!(out, ",\"members\":{members},\"primary\":{}", self.primary.unwrap_or(true));
            }
            EventKind::Send => {
                group(&mut out);
                s(&mut out, "msg", self.msg.as_deref().unwrap_or(""));
                s(&mut out, "order", order);
                view(&mut out);
            }
            EventKind::Deliver => {
                group(&mut out);
                s(&mut out, "msg", self.msg.as_deref().unwrap_or(""));
                s(&mut out, "from", self.from.as_deref().unwrap_or(""));
                s(&mut out, "order", order);
                view(&mut out);
            }
            EventKind::StateSent => {
                group(&mut out);
                view(&mut out);
                s(&mut out, "to", self.to.as_deref().unwrap_or(""));
                s(&mut out, "digest", self.digest.as_deref().unwrap_or(""));
                if let Some(c) = &self.content {
                    s(&mut out, "content", c);
                }
            }
            EventKind::State => {
                group(&mut out);
                view(&mut out);
                s(&mut out, "digest", self.digest.as_deref().unwrap_or(""));
                if let Some(c) = &self.content {
                    s(&mut out, "content", c);
                }
            }
            EventKind::Flush => {
                group(&mut out);
                view(&mut out);
                if let Some(c) = &self.covers {
                    s(&mut out, "covers", c);
                }
            }
            EventKind::Leave => group(&mut out),
            EventKind::Partitioned | EventKind::Crash | EventKind::Unknown => {}
        }
        out.push('}');
        out
    }

    /// The group, or `""`.
    pub fn group(&self) -> &str {
        self.group.as_deref().unwrap_or("")
    }

    /// The message id, or `""`.
    pub fn msg(&self) -> &str {
        self.msg.as_deref().unwrap_or("")
    }

    /// Whether it is an event of kind `kind`.
    pub fn is(&self, kind: EventKind) -> bool {
        self.ev == kind
    }
}

/// Constructors for each event kind; `p`, `i` and `t` are left for the recorder to fill.
impl TraceEvent {
    fn kind(ev: EventKind, group: Option<&str>) -> Self {
        Self { ev, group: group.map(String::from), ..Default::default() }
    }

    /// The trace event an engine event makes by itself: a view installed, a delivery, a
    /// group left (or given up for lost state), a stop. The other events need what only
    /// the host knows: a state's digest (`state_sent`, `state`), what a flush covers.
    pub fn of_engine(ev: &Event) -> Option<Self> {
        match ev {
            Event::View { group, view } => {
                let members = view.members.iter().map(|m| m.to_string()).collect();
                Some(Self::view_installed(group.as_str(), view.id.0, members))
            }
            Event::Deliver(d) => {
                Some(Self::delivered(d.group.as_str(), d.id.to_string(), d.id.sender.to_string(), d.order, d.view.0))
            }
            Event::Left { group } | Event::StateLost { group } => Some(Self::left(group.as_str())),
            Event::Partitioned { .. } => Some(Self::bare(EventKind::Partitioned)),
            _ => None,
        }
    }

    /// `view`: the process installs view `view` of `group`.
    pub fn view_installed(group: &str, view: u64, members: Vec<String>) -> Self {
        Self {
            view: Some(view),
            members: Some(members),
            primary: Some(true),
            ..Self::kind(EventKind::View, Some(group))
        }
    }

    /// `send`: the application hands `msg` to the system (`view` is `None` for a non-member).
    pub fn sent(group: &str, msg: String, order: Order, view: Option<u64>) -> Self {
        Self { msg: Some(msg), order: Some(order), view, ..Self::kind(EventKind::Send, Some(group)) }
    }

    /// `deliver`: the system delivers `msg` from `from` in `view`.
    pub fn delivered(group: &str, msg: String, from: String, order: Order, view: u64) -> Self {
        Self {
            msg: Some(msg),
            from: Some(from),
            order: Some(order),
            view: Some(view),
            ..Self::kind(EventKind::Deliver, Some(group))
        }
    }

    /// `state_sent`: a checkpoint with `digest` produced for joiner `to`, whose first view is `view`.
    pub fn state_sent(group: &str, view: u64, to: String, digest: String) -> Self {
        Self { view: Some(view), to: Some(to), digest: Some(digest), ..Self::kind(EventKind::StateSent, Some(group)) }
    }

    /// `state`: a joiner loaded its initial state.
    pub fn state_loaded(group: &str, view: u64, digest: String) -> Self {
        Self { view: Some(view), digest: Some(digest), ..Self::kind(EventKind::State, Some(group)) }
    }

    /// Marks a `state_sent` or `state` as the set of delivered message ids (see
    /// `content`).
    pub fn of_delivered_set(mut self) -> Self {
        self.content = Some(DELIVERED_SET.into());
        self
    }

    /// `flush`: a `flush()` call returned; `covers` is the last message sent before it.
    pub fn flushed(group: &str, view: u64, covers: Option<String>) -> Self {
        Self { view: Some(view), covers, ..Self::kind(EventKind::Flush, Some(group)) }
    }

    /// `leave`: the process left `group`.
    pub fn left(group: &str) -> Self {
        Self::kind(EventKind::Leave, Some(group))
    }

    /// `partitioned` or `crash`: events with no fields of their own.
    pub fn bare(ev: EventKind) -> Self {
        Self::kind(ev, None)
    }
}
