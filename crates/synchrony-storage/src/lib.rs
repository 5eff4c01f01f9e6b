//! # synchrony-storage
//!
//! Stable storage for a synchrony node, in one embedded [redb](https://docs.rs/redb)
//! database under the node's data directory: the last view the node installed of each
//! group (what recovery after a total failure compares), and per logged group a checkpoint
//! and the log of updates after it.
//!
//! Every write is one redb transaction, committed durably before the call returns: a write
//! the caller was told about survives a SIGKILL at any instant, and a write cut short
//! leaves the previous state (no torn records). A file that is not a synchrony store, or
//! belongs to another node, or is damaged, is reported and never overwritten.
//!
//! ```
//! use synchrony_storage::Store;
//! use synchrony_engine::GroupName;
//! let dir = std::env::temp_dir().join(format!("store-doc-{}", std::process::id()));
//! let store = Store::open(&dir, "n1").unwrap();
//! let g = GroupName::new("accounts");
//! store.append(&g, 1, b"deposit 10").unwrap();
//! store.checkpoint(&g, 1, b"balance 10").unwrap(); // replaces the log
//! store.append(&g, 2, b"withdraw 3").unwrap();
//! let r = store.load(&g).unwrap();
//! assert_eq!(r.checkpoint, Some((1, b"balance 10".to_vec())));
//! assert_eq!(r.log, vec![(2, b"withdraw 3".to_vec())]);
//! # drop(store); std::fs::remove_dir_all(&dir).unwrap();
//! ```

mod crash;

pub use crash::CRASH_ENV;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use synchrony_engine::{GroupName, GroupView};

/// What a store file says it is.
const FORMAT: &str = "synchrony-store/1";
const FILE: &str = "synchrony.redb";

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const VIEWS: TableDefinition<&str, &[u8]> = TableDefinition::new("views");
const CHECKPOINTS: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("checkpoints");
const LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("log");

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The directory or file could not be created or read.
    #[error("cannot use {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a redb database, or it is damaged beyond redb's repair. It was left
    /// as it is.
    #[error("{path} is not a readable synchrony store (left untouched): {source}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What redb said.
        source: Box<redb::DatabaseError>,
    },
    /// The file is a database, but not a synchrony store (or of another format version).
    #[error("{path} is a database but not a synchrony store (format {found:?}); left untouched")]
    Foreign {
        /// The file.
        path: PathBuf,
        /// The format it says it has, if any.
        found: Option<String>,
    },
    /// The store belongs to another node.
    #[error("{path} belongs to node {owner}, not {node}")]
    OtherNode {
        /// The file.
        path: PathBuf,
        /// The node it belongs to.
        owner: String,
        /// The node that opened it.
        node: String,
    },
    /// Another process has the store open.
    #[error("{path} is in use by another process")]
    InUse {
        /// The file.
        path: PathBuf,
    },
    /// A transaction failed while checking the file.
    #[error("{path}: {source}")]
    Store {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: StoreError,
    },
}

/// Why a read or a write failed (the disk, or the database).
#[derive(Debug, thiserror::Error)]
#[error("storage failed: {0}")]
pub struct StoreError(String);

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError(e.to_string())
            }
        }
    )*};
}
from_redb!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// What a logged group has on disk: its checkpoint (sequence number of the last update it
/// covers, and the state) and the updates after it, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The last checkpoint.
    pub checkpoint: Option<(u64, Vec<u8>)>,
    /// Updates after the checkpoint: (sequence number, bytes).
    pub log: Vec<(u64, Vec<u8>)>,
}

/// A node's stable storage.
pub struct Store {
    db: Database,
    path: PathBuf,
    /// Fault injection armed by [`CRASH_ENV`] (tests only).
    crash: Option<std::sync::Arc<crash::CrashPlan>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store of node `node` in `dir` (created if missing). A new store records
    /// its format and owner; an existing one must match both.
    pub fn open(dir: &Path, node: &str) -> Result<Store, OpenError> {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Io { path: dir.to_path_buf(), source })?;
        let path = dir.join(FILE);
        let fresh = !path.exists();
        // `create` would also take an empty file; `open` never initializes anything.
        let crash = crash::CrashPlan::from_env();
        let opened = match &crash {
            None if fresh => Database::create(&path),
            None => Database::open(&path),
            Some(plan) => Self::open_crashing(&path, plan.clone()),
        };
        let db = opened.map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => OpenError::InUse { path: path.clone() },
            // redb reports a file that is not a database as invalid data.
            redb::DatabaseError::Storage(redb::StorageError::Io(source))
                if source.kind() != std::io::ErrorKind::InvalidData =>
            {
                OpenError::Io { path: path.clone(), source }
            }
            other => OpenError::Damaged { path: path.clone(), source: Box::new(other) },
        })?;
        let store = Store { db, path: path.clone(), crash };
        let wrap = |source: StoreError| OpenError::Store { path: path.clone(), source };
        let (format, owner) = store.meta().map_err(wrap)?;
        match (format, owner) {
            (None, None) if fresh || store.is_empty().map_err(wrap)? => {
                store.init(node).map_err(wrap)?;
            }
            (Some(f), Some(owner)) if f == FORMAT => {
                if owner != node {
                    return Err(OpenError::OtherNode { path, owner, node: node.into() });
                }
            }
            (found, _) => return Err(OpenError::Foreign { path, found }),
        }
        Ok(store)
    }

    fn open_crashing(path: &Path, plan: std::sync::Arc<crash::CrashPlan>) -> Result<Database, redb::DatabaseError> {
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let inner = redb::backends::FileBackend::new(file)?;
        redb::Builder::new().create_with_backend(crash::CrashingBackend { inner, plan })
    }

    /// Runs one write operation, marking it for fault injection.
    fn op<T>(&self, op: crash::Op, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        if let Some(c) = &self.crash {
            c.begin(op);
        }
        let r = f();
        if let Some(c) = &self.crash {
            c.end();
        }
        r
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn meta(&self) -> Result<(Option<String>, Option<String>), StoreError> {
        let tx = self.db.begin_read()?;
        let t = match tx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok((None, None)),
            Err(e) => return Err(e.into()),
        };
        let get = |k: &str| -> Result<Option<String>, StoreError> { Ok(t.get(k)?.map(|v| v.value().to_string())) };
        Ok((get("format")?, get("node")?))
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        let tx = self.db.begin_read()?;
        let empty = tx.list_tables()?.next().is_none();
        Ok(empty)
    }

    fn init(&self, node: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(META)?;
            t.insert("format", FORMAT)?;
            t.insert("node", node)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records the view this node installed of `group` (the last one is kept).
    pub fn record_view(&self, group: &GroupName, view: &GroupView) -> Result<(), StoreError> {
        let bytes = postcard::to_allocvec(view).map_err(|e| StoreError(e.to_string()))?;
        self.op(crash::Op::View, || {
            let tx = self.db.begin_write()?;
            tx.open_table(VIEWS)?.insert(group.as_str(), bytes.as_slice())?;
            tx.commit()?;
            Ok(())
        })
    }

    /// The last view this node installed of each group.
    pub fn views(&self) -> Result<BTreeMap<GroupName, GroupView>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = match tx.open_table(VIEWS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = BTreeMap::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let view: GroupView = postcard::from_bytes(v.value()).map_err(|e| StoreError(e.to_string()))?;
            out.insert(GroupName::new(k.value()), view);
        }
        Ok(out)
    }

    /// Appends update `seq` of `group` to its log; durable when this returns.
    pub fn append(&self, group: &GroupName, seq: u64, update: &[u8]) -> Result<(), StoreError> {
        self.append_batch(group, &[(seq, update)])
    }

    /// Appends several updates in one transaction (one disk sync for all).
    pub fn append_batch(&self, group: &GroupName, updates: &[(u64, &[u8])]) -> Result<(), StoreError> {
        self.op(crash::Op::Append, || {
            let tx = self.db.begin_write()?;
            {
                let mut t = tx.open_table(LOG)?;
                for (seq, u) in updates {
                    t.insert((group.as_str(), *seq), *u)?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Stores a checkpoint of the state after update `seq` and empties the group's log (the
    /// checkpoint replaces it: after a state transfer the old log may hold updates past
    /// `seq` of a history the group did not keep), in one transaction: a crash leaves either
    /// the old checkpoint and log or the new ones.
    pub fn checkpoint(&self, group: &GroupName, seq: u64, state: &[u8]) -> Result<(), StoreError> {
        self.op(crash::Op::Checkpoint, || {
            let tx = self.db.begin_write()?;
            {
                tx.open_table(CHECKPOINTS)?.insert(group.as_str(), (seq, state))?;
                let mut log = tx.open_table(LOG)?;
                let covered: Vec<u64> = log
                    .range((group.as_str(), 0)..=(group.as_str(), u64::MAX))?
                    .map(|r| r.map(|(k, _)| k.value().1))
                    .collect::<Result<_, _>>()?;
                for s in covered {
                    log.remove((group.as_str(), s))?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Updates in the log of `group` (after its checkpoint).
    pub fn log_len(&self, group: &GroupName) -> Result<u64, StoreError> {
        Ok(self.load(group)?.log.len() as u64)
    }

    /// What `group` has on disk.
    pub fn load(&self, group: &GroupName) -> Result<Recovered, StoreError> {
        let tx = self.db.begin_read()?;
        let mut r = Recovered::default();
        match tx.open_table(CHECKPOINTS) {
            Ok(t) => {
                if let Some(v) = t.get(group.as_str())? {
                    let (seq, state) = v.value();
                    r.checkpoint = Some((seq, state.to_vec()));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        match tx.open_table(LOG) {
            Ok(t) => {
                if t.len()? > 0 {
                    for row in t.range((group.as_str(), 0)..=(group.as_str(), u64::MAX))? {
                        let (k, v) = row?;
                        r.log.push((k.value().1, v.value().to_vec()));
                    }
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(r)
    }
}
