//! The node's trace file: TRACE.md lines, written one by one as events happen, so that a
//! SIGKILL loses nothing already written.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use synchrony_trace::{Recorder, TraceEvent};

/// Writes one process's trace (successive incarnations share the file).
pub(crate) struct TraceWriter {
    file: File,
    recorder: Recorder,
}

impl TraceWriter {
    pub(crate) fn create(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { file, recorder: Recorder::default() })
    }

    /// A new incarnation: its own `p`, its counter from 0.
    pub(crate) fn set_process(&mut self, p: String) {
        self.recorder.set_process(p);
    }

    pub(crate) fn record(&mut self, e: TraceEvent) {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let mut line = self.recorder.stamp(e, t).to_json_line();
        line.push('\n');
        if let Err(err) = self.file.write_all(line.as_bytes()) {
            tracing::error!(error = %err, "cannot write the trace");
        }
    }
}
