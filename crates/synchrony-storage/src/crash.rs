//! Fault injection for tests: a process that opens its store with `SYNCHRONY_STORE_CRASH`
//! set (`append:N`, `checkpoint:N` or `view:N`) dies in the middle of the N-th such write:
//! the first disk write of its commit is cut in half, and the process aborts. What the
//! store holds after that must still open, with the last committed state.

use redb::backends::FileBackend;
use redb::StorageBackend;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// The environment variable that arms a crash.
pub const CRASH_ENV: &str = "SYNCHRONY_STORE_CRASH";

/// The store's operations a crash can be aimed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Op {
    None = 0,
    Append = 1,
    Checkpoint = 2,
    View = 3,
}

/// Which write to cut, and where the store is.
#[derive(Debug)]
pub(crate) struct CrashPlan {
    target: Op,
    nth: u64,
    seen: AtomicU64,
    current: AtomicU8,
}

impl CrashPlan {
    /// The plan `SYNCHRONY_STORE_CRASH` asks for, if any (a malformed value is refused
    /// loudly: a test that meant to crash must not pass by not crashing).
    pub(crate) fn from_env() -> Option<Arc<CrashPlan>> {
        let v = std::env::var(CRASH_ENV).ok()?;
        let (op, n) = v.split_once(':').unwrap_or((v.as_str(), ""));
        let target = match op {
            "append" => Op::Append,
            "checkpoint" => Op::Checkpoint,
            "view" => Op::View,
            _ => panic!("{CRASH_ENV}={v}: expected append:N, checkpoint:N or view:N"),
        };
        let nth = n.parse().unwrap_or_else(|_| panic!("{CRASH_ENV}={v}: N must be a number"));
        Some(Arc::new(CrashPlan { target, nth, seen: AtomicU64::new(0), current: AtomicU8::new(0) }))
    }

    /// The store begins an operation (its transaction follows).
    pub(crate) fn begin(&self, op: Op) {
        let armed = op == self.target && self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.nth;
        self.current.store(if armed { op as u8 } else { Op::None as u8 }, Ordering::SeqCst);
    }

    /// The operation ended without a crash.
    pub(crate) fn end(&self) {
        self.current.store(Op::None as u8, Ordering::SeqCst);
    }

    fn armed(&self) -> bool {
        self.current.load(Ordering::SeqCst) != Op::None as u8
    }
}

/// The file backend, cutting the armed operation's first write in half.
#[derive(Debug)]
pub(crate) struct CrashingBackend {
    pub(crate) inner: FileBackend,
    pub(crate) plan: Arc<CrashPlan>,
}

impl StorageBackend for CrashingBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
        self.inner.read(offset, len)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)
    }

    fn sync_data(&self, eventual: bool) -> Result<(), std::io::Error> {
        self.inner.sync_data(eventual)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        if self.plan.armed() {
            let _ = self.inner.write(offset, &data[..data.len() / 2]);
            eprintln!("{CRASH_ENV}: dying in the middle of a write, as asked");
            std::process::abort();
        }
        self.inner.write(offset, data)
    }
}
