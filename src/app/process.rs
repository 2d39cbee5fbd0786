//! Process-wide facts: when this process started (for "connected N ms after
//! start") and fresh non-zero ids (incarnations, endpoint ids).

use std::time::Duration;

static PROCESS_START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Record when the process started (call first thing in `main`), so reports
/// can say how long it took from process start to a connected link.
pub fn mark_process_start() {
    PROCESS_START.get_or_init(std::time::Instant::now);
}

/// From process start (or first use) to `t`.
pub fn since_process_start(t: tokio::time::Instant) -> Duration {
    t.into_std()
        .saturating_duration_since(*PROCESS_START.get_or_init(std::time::Instant::now))
}

/// A fresh, non-zero id (incarnations, endpoint ids).
pub fn fresh_id() -> u64 {
    loop {
        let x: u64 = rand::random();
        if x != 0 {
            return x;
        }
    }
}
