//! A progress bar on stderr for long sweeps, hidden when stderr is not a terminal.
//!
//! A 16 MiB sweep against a slow peer takes minutes, so a bar helps; but in CI logs or when
//! stderr is redirected it would only add noise, so it is hidden there. Updates are cheap
//! enough to make once per RPC (an atomic add; indicatif rate-limits redraws), and stage
//! messages are formatted once per size, never per call.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const TEMPLATE: &str = "{msg:>14} [{elapsed_precise}] {wide_bar} {pos}/{len} calls, eta {eta}";

/// Progress over all calls of a run, warm-up included. Clones share the same bar.
#[derive(Clone, Debug)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar of `total_calls` on stderr, or a hidden one if stderr is not a terminal.
    pub fn new(total_calls: u64) -> Progress {
        let target = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(total_calls), target);
        // The template is a constant; should indicatif ever reject it, its default style will do.
        if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
            bar.set_style(style);
        }
        Progress { bar }
    }

    /// A bar that never draws: for tests and for callers that report progress otherwise.
    pub fn hidden() -> Progress {
        Progress {
            bar: ProgressBar::hidden(),
        }
    }

    /// Whether the bar draws nothing.
    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// Names the system and payload size now running, e.g. "slime 16MB".
    pub fn set_stage(&self, system: &str, size: usize) {
        self.bar
            .set_message(format!("{system} {}", super::plan::human_size(size)));
    }

    /// Counts `n` more calls done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Calls counted so far.
    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    /// Removes the bar from the terminal, so the table printed next starts on a clean line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_counts_without_drawing() {
        let p = Progress::hidden();
        assert!(p.is_hidden());
        p.set_stage("slime", 16 * 1024 * 1024);
        assert_eq!(p.bar.message(), "slime 16MB");
        p.inc(3);
        p.inc(2);
        assert_eq!(p.position(), 5);
        // Clones share the bar, so worker threads can count into the same total.
        let q = p.clone();
        q.inc(1);
        assert_eq!(p.position(), 6);
        p.finish();
    }

    #[test]
    fn new_has_the_length_and_style() {
        // Under `cargo test` stderr may or may not be a terminal; both paths must work.
        let p = Progress::new(42);
        assert_eq!(p.bar.length(), Some(42));
        p.set_stage("floor", 1024);
        p.inc(42);
        assert_eq!(p.position(), 42);
        p.finish();
    }
}
