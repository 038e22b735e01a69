//! What a tool prints: stdout and stderr collected in memory and written once at the end,
//! so the call's exit code can be logged after the output is complete.

use std::io::Write;

/// Collected output of one call.
#[derive(Debug, Default)]
pub struct Out {
    /// Bytes for stdout.
    pub stdout: Vec<u8>,
    /// Bytes for stderr.
    pub stderr: Vec<u8>,
    /// A `hang-midway` fault asks the tool to stop at its midway point (set before it runs).
    pub midway: bool,
    /// The tool reached its midway point under `midway`: the call hangs there (set by it).
    pub hang_now: bool,
}

impl Out {
    /// Append to stdout.
    pub fn out(&mut self, s: impl AsRef<[u8]>) {
        self.stdout.extend_from_slice(s.as_ref());
    }

    /// Append to stderr.
    pub fn err(&mut self, s: impl AsRef<[u8]>) {
        self.stderr.extend_from_slice(s.as_ref());
    }

    /// Write what was collected and clear it (a closed pipe is not an error here).
    pub fn flush(&mut self) {
        let _ = std::io::stdout().write_all(&self.stdout);
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().write_all(&self.stderr);
        let _ = std::io::stderr().flush();
        self.stdout.clear();
        self.stderr.clear();
    }
}
