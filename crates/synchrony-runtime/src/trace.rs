//! The node's trace file: TRACE.md lines, written one by one as events happen, so that a
//! SIGKILL loses nothing already written.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use synchrony_trace::TraceEvent;

/// Writes one process's trace (successive incarnations share the file). The host stamps
/// each event with its process and number; the writer gives it the wall clock's time.
pub(crate) struct TraceWriter {
    file: File,
}

impl TraceWriter {
    pub(crate) fn create(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { file })
    }

    /// Writes one event (stamped already), as one line in one `write`.
    pub(crate) fn write(&mut self, e: &TraceEvent) {
        let mut line = e.to_json_line();
        line.push('\n');
        if let Err(err) = self.file.write_all(line.as_bytes()) {
            tracing::error!(error = %err, "cannot write the trace");
        }
    }
}
