//! A payload read from an `AsyncRead` ([`crate::Runtime::send_reader`]) goes to a spool file
//! that is mapped back into memory: the sender never holds it on its heap (the kernel pages
//! it in as the fragments go out, and may drop those pages again, as it does a file's
//! cache), and a view change that sends the message again reads it from there.

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use synchrony_engine::SendError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Where payloads are spooled, and the largest one a member may multicast.
#[derive(Debug)]
pub(crate) struct Spool {
    pub(crate) dir: PathBuf,
    pub(crate) limit: usize,
}

impl Spool {
    /// In the data directory if there is one (the disk the node was given), else the
    /// system's temporary directory.
    pub(crate) fn of(config: &crate::Config) -> Self {
        let dir = config.data_dir.as_ref().map_or_else(std::env::temp_dir, |d| d.join("spool"));
        Self { dir, limit: config.engine.max_message_bytes }
    }
}

/// Why [`crate::Runtime::send_reader`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SendReaderError {
    /// The engine refused the send (too large: `size` is then what was read before the limit
    /// was passed; this node stopped, ...).
    #[error(transparent)]
    Send(#[from] SendError),
    /// The payload could not be read, or written to the spool file.
    #[error("cannot spool the payload in {dir}: {error}")]
    Spool {
        /// The spool directory.
        dir: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
}

/// Reads `reader` to its end into a fresh spool file in `dir` and maps it.
pub(crate) async fn spool(reader: impl AsyncRead + Unpin, dir: &Path, limit: usize) -> Result<Bytes, SendReaderError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let err = |error| SendReaderError::Spool { dir: dir.to_path_buf(), error };
    let path = dir.join(format!(".synchrony-spool-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    tokio::fs::create_dir_all(dir).await.map_err(err)?;
    let file = tokio::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).await.map_err(err)?;
    // Unlinked at once: nothing else opens it, and its space goes back when the map goes.
    tokio::fs::remove_file(&path).await.map_err(err)?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let read = tokio::io::copy(&mut reader.take(limit as u64 + 1), &mut out).await.map_err(err)?;
    if read > limit as u64 {
        return Err(SendError::TooLarge { size: read as usize, limit }.into());
    }
    out.flush().await.map_err(err)?;
    if read == 0 {
        return Ok(Bytes::new());
    }
    let file = out.into_inner().into_std().await;
    // SAFETY: the file is this process's own, unlinked above and never written again:
    // nothing changes or truncates it under the map.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(err)?;
    Ok(Bytes::from_owner(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spooled_payload_reads_back_as_written_and_leaves_no_file() {
        let dir = std::env::temp_dir().join(format!("synchrony-spool-test-{}", std::process::id()));
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let got = spool(&data[..], &dir, 1 << 30).await.expect("spooled");
        assert!(got == data, "the bytes read back");
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 0, "the spool file is unlinked");
        assert!(spool(&b""[..], &dir, 10).await.expect("empty").is_empty());
        match spool(&data[..], &dir, 1000).await {
            Err(SendReaderError::Send(SendError::TooLarge { size, limit })) => assert_eq!((size, limit), (1001, 1000)),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
