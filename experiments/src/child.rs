//! The harness's child processes as the user sees them when they fail: the last lines each
//! wrote to stderr, and an error's causes each told once.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Lines of a failed child's stderr shown with its error.
pub const TAIL_LINES: usize = 12;

/// The last [`TAIL_LINES`] lines a child process writes to its piped stderr, read by a
/// thread of its own so that the child never blocks on a full pipe however much it logs.
#[derive(Debug)]
pub struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl StderrTail {
    /// Starts reading `child`'s stderr (which must have been piped; otherwise there is
    /// nothing to read and the tail stays empty).
    pub fn capture(child: &mut Child) -> StderrTail {
        let lines = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let reader = child.stderr.take().map(|err| {
            let kept = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut k) = kept.lock() {
                        if k.len() == TAIL_LINES {
                            k.pop_front();
                        }
                        k.push_back(line);
                    }
                }
            })
        });
        StderrTail { lines, reader }
    }

    /// The lines kept, once the child has exited (or been killed): waits until everything
    /// it wrote has been read.
    pub fn finish(mut self) -> String {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let lines = self.lines.lock().map(|l| l.clone()).unwrap_or_default();
        Vec::from(lines).join("\n")
    }
}

/// The last [`TAIL_LINES`] lines of `text`.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// The error of child process `what` that ended with `status` (`exited early`, `failed`:
/// `how`), showing `stderr` (its last lines) indented below, or saying it wrote nothing.
pub fn failed(what: &str, how: &str, status: ExitStatus, stderr: &str) -> anyhow::Error {
    let stderr = tail(stderr.trim_end());
    if stderr.trim().is_empty() {
        return anyhow::anyhow!("{what} {how} ({status}) and wrote nothing to stderr");
    }
    let shown: Vec<String> = stderr.lines().map(|l| format!("    {l}")).collect();
    anyhow::anyhow!(
        "{what} {how} ({status}); the end of its stderr:\n{}",
        shown.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_the_last_lines() {
        let text: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
        let t = tail(&text.join("\n"));
        assert_eq!(t.lines().count(), TAIL_LINES);
        assert!(t.ends_with("line 29") && t.starts_with("line 18"));
    }
}
