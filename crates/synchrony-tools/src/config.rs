//! Configuration: a replicated set of settings whose changes are ordered with every message
//! and every view (gbcast), so that all members see the same configuration when any
//! message arrives.

use crate::channel::Keyed;
use crate::{decode, encode, Core, Effects, GroupChannel, GroupSend, ToolError, ToolHandle};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use synchrony_engine::{Delivery, GroupView, MsgId, Order};

/// Marks a configuration change, so that it is never mistaken for the application's own
/// messages in the same group.
const MAGIC: &[u8; 4] = b"cfg1";

#[derive(Debug, Serialize, Deserialize)]
enum Change {
    Set(String, String),
    Remove(String),
}

/// What the configuration tells its users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigOutput {
    /// The change sent as `id` is in force; the configuration is now at `version`.
    Changed {
        /// The change's message.
        id: MsgId,
        /// The configuration's version (the same at every member after the same change).
        version: u64,
    },
    /// One of the application's messages, with the configuration version it arrived under
    /// (the same at every member).
    Message {
        /// The message.
        delivery: Delivery,
        /// The configuration's version when it arrived.
        version: u64,
    },
}

impl Keyed for ConfigOutput {
    fn key(&self) -> Option<&MsgId> {
        match self {
            ConfigOutput::Changed { id, .. } => Some(id),
            ConfigOutput::Message { .. } => None,
        }
    }
}

/// The replicated configuration of a group (a [`Core`]). Messages of the group that are not
/// configuration changes pass by untouched: read [`Configuration::version`] when one
/// arrives to know the configuration it arrived under.
///
/// ```
/// use synchrony_tools::{Configuration, Core, Effects};
/// use synchrony_engine::{Delivery, GroupName, MsgId, ProcessId, ViewId};
/// let mut cfg = Configuration::default();
/// let (order, payload) = Configuration::set("mode", "fast");
/// let d = Delivery { group: GroupName::new("g"), view: ViewId(1),
///     id: MsgId { sender: ProcessId::new("a", 1), counter: 0 }, order, query: false, payload };
/// cfg.on_message(&d, &mut Effects::default());
/// assert_eq!(cfg.get("mode"), Some("fast"));
/// assert_eq!(cfg.version(), 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Configuration {
    entries: BTreeMap<String, String>,
    version: u64,
}

impl Configuration {
    /// The multicast that sets `key` (gbcast: ordered with every message and view).
    pub fn set(key: &str, value: &str) -> (Order, Bytes) {
        Self::change(&Change::Set(key.into(), value.into()))
    }

    /// The multicast that removes `key`.
    pub fn remove(key: &str) -> (Order, Bytes) {
        Self::change(&Change::Remove(key.into()))
    }

    fn change(c: &Change) -> (Order, Bytes) {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&encode(c));
        (Order::Gbcast, Bytes::from(b))
    }

    /// The value of `key` now.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|s| s.as_str())
    }

    /// Every setting.
    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.entries
    }

    /// Changes applied so far.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether a delivered message is a configuration change (and not the application's).
    pub fn is_change(msg: &Delivery) -> bool {
        msg.order == Order::Gbcast && msg.payload.starts_with(MAGIC)
    }
}

#[derive(Serialize, Deserialize)]
struct State {
    entries: BTreeMap<String, String>,
    version: u64,
}

impl Core for Configuration {
    type Output = ConfigOutput;

    fn on_view(&mut self, _view: &GroupView, _fx: &mut Effects<ConfigOutput>) {}

    fn on_message(&mut self, msg: &Delivery, fx: &mut Effects<ConfigOutput>) {
        if !Self::is_change(msg) {
            fx.output(ConfigOutput::Message { delivery: msg.clone(), version: self.version });
            return;
        }
        let Ok(change) = decode::<Change>(&msg.payload[MAGIC.len()..]) else {
            tracing::warn!(id = %msg.id, "a configuration change that does not decode was ignored");
            return;
        };
        match change {
            Change::Set(k, v) => {
                self.entries.insert(k, v);
            }
            Change::Remove(k) => {
                self.entries.remove(&k);
            }
        }
        self.version += 1;
        fx.output(ConfigOutput::Changed { id: msg.id.clone(), version: self.version });
    }

    fn snapshot(&self) -> Bytes {
        encode(&State { entries: self.entries.clone(), version: self.version })
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), ToolError> {
        let s: State = decode(state)?;
        self.entries = s.entries;
        self.version = s.version;
        Ok(())
    }
}

/// A group's configuration, for async callers.
///
/// ```no_run
/// # async fn f(group: impl synchrony_tools::GroupChannel) -> Result<(), synchrony_tools::ToolError> {
/// let (config, mut messages) = synchrony_tools::ConfigHandle::start(group);
/// let version = config.set("log-level", "debug").await?;
/// assert_eq!(config.get("log-level").as_deref(), Some("debug"));
/// assert!(config.version() >= version);
/// // The application's own messages in the group, each with the version it arrived under.
/// while let Some(synchrony_tools::ConfigOutput::Message { delivery, version }) = messages.recv().await {
///     println!("{:?} under configuration {version}", delivery.payload);
/// }
/// # Ok(()) }
/// ```
pub struct ConfigHandle<S: GroupSend> {
    tool: ToolHandle<Configuration, S>,
}

impl<S: GroupSend> Clone for ConfigHandle<S> {
    fn clone(&self) -> Self {
        Self { tool: self.tool.clone() }
    }
}

impl<S: GroupSend> std::fmt::Debug for ConfigHandle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigHandle").finish_non_exhaustive()
    }
}

impl<S: GroupSend> ConfigHandle<S> {
    crate::group_access!(tool);

    /// Runs the configuration on `group`; the receiver gets every change and every
    /// application message of the group, in delivery order.
    pub fn start<G: GroupChannel<Sender = S>>(group: G) -> (Self, tokio::sync::mpsc::Receiver<ConfigOutput>) {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        (Self { tool: ToolHandle::start(group, Configuration::default(), Some(tx)) }, rx)
    }

    /// The group's sender, for the application's own messages.
    pub fn sender(&self) -> &S {
        self.tool.sender()
    }

    /// Sets `key` at every member; returns the version it made, once in force here.
    pub async fn set(&self, key: &str, value: &str) -> Result<u64, ToolError> {
        let (order, payload) = Configuration::set(key, value);
        changed(self.tool.send_and_wait(order, payload).await?)
    }

    /// Removes `key` at every member.
    pub async fn remove(&self, key: &str) -> Result<u64, ToolError> {
        let (order, payload) = Configuration::remove(key);
        changed(self.tool.send_and_wait(order, payload).await?)
    }

    /// The value of `key` here.
    pub fn get(&self, key: &str) -> Option<String> {
        self.tool.read(|c| c.get(key).map(String::from))
    }

    /// The version here.
    pub fn version(&self) -> u64 {
        self.tool.read(|c| c.version())
    }
}

fn changed(o: ConfigOutput) -> Result<u64, ToolError> {
    match o {
        ConfigOutput::Changed { version, .. } => Ok(version),
        ConfigOutput::Message { .. } => Err(ToolError::Refused("not a change".into())),
    }
}
