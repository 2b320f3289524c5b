//! Progress of long operations on stderr, in `rbd`'s words:
//! `Removing image: 42% complete...` updated in place, then `...done.`

use std::io::Write as _;
use std::sync::Mutex;

/// A progress line for one operation.
#[derive(Debug)]
pub struct ProgressLine {
    label: String,
    enabled: bool,
    last: Mutex<Option<u64>>,
}

impl ProgressLine {
    /// Starts a progress line (silent if `enabled` is false).
    pub fn new(label: &str, enabled: bool) -> Self {
        ProgressLine {
            label: label.to_owned(),
            enabled,
            last: Mutex::new(None),
        }
    }

    /// Reports `done` of `total`; prints only when the percentage changes.
    pub fn update(&self, done: u64, total: u64) {
        if !self.enabled {
            return;
        }
        let pct = if total == 0 {
            100
        } else {
            (done.min(total) as u128 * 100 / total as u128) as u64
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if *last == Some(pct) {
            return;
        }
        *last = Some(pct);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{}: {pct}% complete...", self.label);
        let _ = err.flush();
    }

    /// Finishes the line with `done.`.
    pub fn finish(&self) {
        if self.enabled {
            let _ = writeln!(std::io::stderr(), "\r{}: 100% complete...done.", self.label);
        }
    }

    /// Ends the line as `result` says: `done.` for success, `failed.` for an error, which is
    /// returned.
    pub fn conclude<T, E: Into<crate::error::CliError>>(
        &self,
        result: Result<T, E>,
    ) -> crate::error::CliResult<T> {
        match result {
            Ok(value) => {
                self.finish();
                Ok(value)
            }
            Err(e) => {
                self.fail();
                Err(e.into())
            }
        }
    }

    /// Finishes the line with `failed.`.
    pub fn fail(&self) {
        if self.enabled && self.last.lock().map(|l| l.is_some()).unwrap_or(false) {
            let _ = writeln!(std::io::stderr(), "failed.");
        }
    }
}
