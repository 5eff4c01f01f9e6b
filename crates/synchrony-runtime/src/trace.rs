//! The node's trace file: TRACE.md lines, written one by one as events happen, so that a
//! SIGKILL loses nothing already written.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use synchrony_check::TraceEvent;

/// Writes one process's trace (successive incarnations share the file).
pub(crate) struct TraceWriter {
    file: File,
    p: String,
    i: u64,
}

impl TraceWriter {
    pub(crate) fn create(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { file, p: String::new(), i: 0 })
    }

    /// A new incarnation: its own `p`, its counter from 0.
    pub(crate) fn set_process(&mut self, p: String) {
        self.p = p;
        self.i = 0;
    }

    pub(crate) fn record(&mut self, mut e: TraceEvent) {
        e.p = self.p.clone();
        e.i = self.i;
        e.t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        self.i += 1;
        let mut line = e.to_json_line();
        line.push('\n');
        if let Err(err) = self.file.write_all(line.as_bytes()) {
            tracing::error!(error = %err, "cannot write the trace");
        }
    }
}
