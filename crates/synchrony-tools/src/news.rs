//! News: publish-subscribe on subjects. Subjects map onto a bounded number of groups (the
//! channels), postings go to their channel in total order, and each receiver keeps the
//! postings that match its subscriptions, so a million subjects do not make a million
//! groups, and every subscriber receives a subject's postings in the same order, each
//! poster's in the order it posted them.

use crate::channel::Keyed;
use crate::{decode, encode, Core, Effects, GroupChannel, GroupSend, ToolError, ToolHandle};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use synchrony_engine::{Delivery, GroupName, GroupView, MsgId, Order, ProcessId};
use tokio::sync::mpsc;

/// Marks a posting, so that a channel's other messages are never taken for one.
const MAGIC: &[u8; 4] = b"nws1";

/// A posting as subscribers receive it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posting {
    /// The subject.
    pub subject: String,
    /// The poster.
    pub from: ProcessId,
    /// The posting's message.
    pub id: MsgId,
    /// The body.
    pub body: Bytes,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    subject: String,
    body: Vec<u8>,
}

/// What a channel tells its users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewsOutput {
    /// A posting that matches a subscription here.
    Posting(Posting),
}

impl Keyed for NewsOutput {
    fn key(&self) -> Option<&MsgId> {
        None
    }
}

/// Whether `subject` matches `pattern`: the pattern is a subject, or ends in `*` to match
/// every subject that starts with what comes before it (`"prices.*"`, `"*"`).
pub fn matches(pattern: &str, subject: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => subject.starts_with(prefix),
        None => pattern == subject,
    }
}

/// The channel a subject is posted on, of `channels` (FNV-1a of the subject: the same at
/// every process and every build).
pub fn channel_of(subject: &str, channels: u32) -> u32 {
    (crate::fnv1a(subject.as_bytes()) % u64::from(channels.max(1))) as u32
}

/// The group of channel `k` of the news service `service`.
pub fn channel_group(service: &str, k: u32) -> GroupName {
    GroupName::new(format!("{service}/news/{k}"))
}

/// One channel's receiving side (a [`Core`]): keeps the postings that match the local
/// subscriptions. It has no replicated state: a subscriber sees what is posted after it
/// joined.
///
/// ```
/// use synchrony_tools::{Core, Effects, News, NewsOutput};
/// use synchrony_engine::{Delivery, GroupName, MsgId, ProcessId, ViewId};
/// let mut channel = News::default();
/// channel.subscribe("prices.*");
/// let mut fx = Effects::default();
/// for (n, subject) in ["prices.acme", "weather.paris"].iter().enumerate() {
///     let (order, payload) = News::post(subject, b"...");
///     let d = Delivery { group: GroupName::new("news/0"), view: ViewId(1),
///         id: MsgId { sender: ProcessId::new("a", 1), counter: n as u64 }, order, query: false, payload };
///     channel.on_message(&d, &mut fx);
/// }
/// assert!(matches!(&fx.outputs[..], [NewsOutput::Posting(p)] if p.subject == "prices.acme"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct News {
    patterns: BTreeSet<String>,
    filtered: u64,
}

impl News {
    /// The multicast of a posting (total order on its channel).
    pub fn post(subject: &str, body: &[u8]) -> (Order, Bytes) {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&encode(&Wire { subject: subject.into(), body: body.to_vec() }));
        (Order::Total, Bytes::from(b))
    }

    /// Receives the subjects that match `pattern` from now on.
    pub fn subscribe(&mut self, pattern: &str) {
        self.patterns.insert(pattern.into());
    }

    /// Stops receiving `pattern`.
    pub fn unsubscribe(&mut self, pattern: &str) {
        self.patterns.remove(pattern);
    }

    /// Whether a subject is wanted here.
    pub fn wants(&self, subject: &str) -> bool {
        self.patterns.iter().any(|p| matches(p, subject))
    }

    /// Postings dropped here because no subscription matched (filtering at the receiver).
    pub fn filtered(&self) -> u64 {
        self.filtered
    }
}

impl Core for News {
    type Output = NewsOutput;

    fn on_view(&mut self, _view: &GroupView, _fx: &mut Effects<NewsOutput>) {}

    fn on_message(&mut self, msg: &Delivery, fx: &mut Effects<NewsOutput>) {
        let Some(rest) = msg.payload.strip_prefix(MAGIC) else { return crate::not_understood(msg, fx) };
        let Ok(w) = decode::<Wire>(rest) else {
            tracing::warn!(id = %msg.id, "a posting that does not decode was ignored");
            return crate::not_understood(msg, fx);
        };
        if !self.wants(&w.subject) {
            self.filtered += 1;
            return;
        }
        let p = Posting { subject: w.subject, from: msg.id.sender.clone(), id: msg.id.clone(), body: w.body.into() };
        fx.output(NewsOutput::Posting(p));
    }

    fn snapshot(&self) -> Bytes {
        Bytes::new()
    }

    fn restore(&mut self, _state: &[u8]) -> Result<(), ToolError> {
        Ok(())
    }
}

/// Subjects of one channel being read, and where their postings go.
type Subscribers = Arc<Mutex<Vec<(String, mpsc::Sender<Posting>)>>>;

/// A news service over `channels` groups, for async callers. Join the channel groups
/// (named by [`channel_group`]) and hand them in; postings then go to the subject's channel,
/// and each subscription receives what matches.
///
/// ```no_run
/// # async fn f<G: synchrony_tools::GroupChannel>(channels: Vec<G>) -> Result<(), synchrony_tools::ToolError> {
/// let news = synchrony_tools::NewsService::start(channels);
/// let mut acme = news.subscribe("prices.acme");
/// news.post("prices.acme", b"101.5").await?;
/// let posting = acme.recv().await.expect("the service runs");
/// assert_eq!(&posting.body[..], b"101.5");
/// # Ok(()) }
/// ```
pub struct NewsService<S: GroupSend> {
    channels: Vec<ToolHandle<News, S>>,
    subscribers: Subscribers,
}

impl<S: GroupSend> Clone for NewsService<S> {
    fn clone(&self) -> Self {
        Self { channels: self.channels.clone(), subscribers: self.subscribers.clone() }
    }
}

impl<S: GroupSend> std::fmt::Debug for NewsService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewsService").field("channels", &self.channels.len()).finish_non_exhaustive()
    }
}

impl<S: GroupSend> NewsService<S> {
    /// Stops the service and leaves its channel groups; returns once every leave is done.
    /// (Dropping the last clone of the service leaves them too, in the background.)
    pub async fn leave(&self) -> Result<(), crate::ToolError> {
        for c in &self.channels {
            c.leave().await?;
        }
        Ok(())
    }

    /// Runs the service on its channel groups, in channel order.
    pub fn start<G: GroupChannel<Sender = S>>(channels: Vec<G>) -> Self {
        let subscribers: Subscribers = Arc::default();
        let mut handles = Vec::new();
        for g in channels {
            let (tx, mut rx) = mpsc::channel::<NewsOutput>(1024);
            let mut core = News::default();
            core.subscribe("*"); // filtering per subscription happens below
            handles.push(ToolHandle::start(g, core, Some(tx)));
            let subs = subscribers.clone();
            tokio::spawn(async move {
                while let Some(NewsOutput::Posting(p)) = rx.recv().await {
                    let targets: Vec<mpsc::Sender<Posting>> = {
                        let mut list = subs.lock().unwrap_or_else(|e| e.into_inner());
                        list.retain(|(_, tx)| !tx.is_closed());
                        list.iter().filter(|(pat, _)| matches(pat, &p.subject)).map(|(_, tx)| tx.clone()).collect()
                    };
                    for t in targets {
                        let _ = t.send(p.clone()).await;
                    }
                }
            });
        }
        Self { channels: handles, subscribers }
    }

    /// Receives postings on subjects that match `pattern` (a subject, or a prefix ending in
    /// `*`) from now on. Drop the receiver to unsubscribe.
    pub fn subscribe(&self, pattern: &str) -> mpsc::Receiver<Posting> {
        let (tx, rx) = mpsc::channel(1024);
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).push((pattern.into(), tx));
        rx
    }

    /// Posts to `subject`.
    pub async fn post(&self, subject: &str, body: &[u8]) -> Result<MsgId, ToolError> {
        let k = channel_of(subject, self.channels.len() as u32) as usize;
        let (order, payload) = News::post(subject, body);
        let ch = self.channels.get(k).ok_or(ToolError::Closed)?;
        ch.sender().send(order, payload).await
    }
}
