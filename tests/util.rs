//! Shared helpers: a current-thread runtime and bounded waits on transports.

use std::future::Future;
use std::time::Duration;

use slimebench_proto::{Completion, Transport};

/// Run `f` on a fresh current-thread runtime with IO and time enabled.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Poll `t` until `done` holds over the completions gathered so far.
/// Panics after `limit` (a hang is a test failure, not a timeout of CI).
pub async fn poll_until<T: Transport>(
    t: &mut T,
    limit: Duration,
    mut done: impl FnMut(&T, &[Completion]) -> bool,
) -> Vec<Completion> {
    let mut all = Vec::new();
    let fut = async {
        loop {
            t.poll_completions(&mut all).expect("poll");
            if done(t, &all) {
                return;
            }
            std::future::poll_fn(|cx| t.poll_ready(cx)).await;
        }
    };
    tokio::time::timeout(limit, fut)
        .await
        .expect("condition not reached in time");
    all
}

/// A unique scratch directory under the system temp dir.
pub fn scratch_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "slimebench-test-{tag}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
}
