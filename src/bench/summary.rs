//! `summary.json`: what the CSVs leave out — the full per-size statistics and the run's metadata.
//!
//! The CSVs keep the original's five columns so they compare; everything else needed to
//! interpret or reproduce a run (git sha, host, transport, flags, p99.9, max, skipped sizes)
//! goes here, beside them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::plan::SweepPlan;
use super::stats::SizeStats;

/// Who ran what, where, when and how.
#[derive(Clone, Debug, Serialize)]
pub struct RunMeta {
    /// The program name, e.g. "slimebench".
    pub tool: String,
    /// The program version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The commit the binary was built from, or "unknown".
    pub git_sha: String,
    /// The machine's host name; see [`hostname`].
    pub host: String,
    /// Start of the run, milliseconds since the Unix epoch; see [`now_unix_ms`].
    pub started_unix_ms: u128,
    /// The command line, program name first.
    pub command: Vec<String>,
    /// The data transport used (e.g. "tcp", "rdma").
    pub transport: String,
    /// The control plane used (e.g. a Redis URL or "in-process").
    pub ctrl: String,
    /// Every effective flag value, as the CLI saw it.
    pub flags: serde_json::Value,
    /// Free-form remarks: skipped systems, fallbacks, warnings worth keeping with the numbers.
    pub notes: Vec<String>,
}

/// Everything written to `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The run's metadata.
    pub meta: RunMeta,
    /// The sweep as planned (before sizes were skipped).
    pub plan: SweepPlan,
    /// Sizes in bytes not run because the transport could not carry them.
    pub skipped_sizes: Vec<usize>,
    /// Full statistics per system, keyed by system name; a BTreeMap keeps the file's order stable.
    pub systems: BTreeMap<String, Vec<SizeStats>>,
}

/// Why `summary.json` could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// The output directory could not be created: check the path and its permissions.
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir {
        /// The directory that could not be created.
        path: PathBuf,
        /// The underlying IO error.
        source: std::io::Error,
    },
    /// The summary could not be turned into JSON: a bug (e.g. a map with non-string keys in
    /// `flags`); report it with the flags used.
    #[error("cannot serialize summary: {0}")]
    Serialize(#[source] serde_json::Error),
    /// The file could not be written: check free space and permissions.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The underlying IO error.
        source: std::io::Error,
    },
}

/// Writes `s` as pretty-printed JSON to `path`, creating the parent directory.
///
/// Non-finite floats, which JSON cannot hold, are written as `null`.
///
/// # Errors
///
/// [`SummaryError::CreateDir`], [`SummaryError::Serialize`] or [`SummaryError::Write`].
pub fn write_summary(path: &Path, s: &Summary) -> Result<(), SummaryError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| SummaryError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let mut json = serde_json::to_string_pretty(s).map_err(SummaryError::Serialize)?;
    json.push('\n');
    std::fs::write(path, json).map_err(|source| SummaryError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The host name: `/proc/sys/kernel/hostname`, else `$HOSTNAME`, else "unknown".
///
/// No libc call or extra dependency: /proc covers Linux, the variable covers most shells.
pub fn hostname() -> String {
    let from_proc = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let from_env = std::env::var("HOSTNAME").ok();
    [from_proc, from_env]
        .into_iter()
        .flatten()
        .map(|h| h.trim().to_string())
        .find(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Milliseconds since the Unix epoch, for [`RunMeta::started_unix_ms`] (0 if the clock is
/// before 1970).
pub fn now_unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::csv::unique_temp_dir;
    use crate::bench::plan::{KIB, MIB, WARMUP};
    use std::time::Duration;

    fn sample_summary() -> Summary {
        let plan = SweepPlan::new(4 * MIB, WARMUP, None);
        let (_, skipped) = plan.split_by_limit(MIB);
        let mut systems = BTreeMap::new();
        systems.insert(
            "slime".to_string(),
            vec![SizeStats::from_samples(
                KIB,
                &[Duration::from_micros(50), Duration::from_micros(60)],
            )],
        );
        Summary {
            meta: RunMeta {
                tool: "slimebench".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                git_sha: "abc123".into(),
                host: hostname(),
                started_unix_ms: now_unix_ms(),
                command: vec!["slimebench".into(), "--max-size-mb".into(), "4".into()],
                transport: "tcp".into(),
                ctrl: "in-process".into(),
                flags: serde_json::json!({ "max_size_mb": 4, "with_pulsing": false }),
                notes: vec!["test".into()],
            },
            plan,
            skipped_sizes: skipped,
            systems,
        }
    }

    #[test]
    fn writes_pretty_json_with_all_parts() {
        let dir = unique_temp_dir("summary");
        let path = dir.join("run/summary.json");
        let s = sample_summary();
        write_summary(&path, &s).expect("write");
        let text = std::fs::read_to_string(&path).expect("read back");
        assert!(text.contains("\n  \"meta\": {"), "not pretty: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid json");
        assert_eq!(v["meta"]["transport"], "tcp");
        assert_eq!(v["meta"]["flags"]["max_size_mb"], 4);
        assert_eq!(v["plan"]["sizes"][0]["size"], 1024);
        assert_eq!(v["plan"]["sizes"][0]["warmup"], 20);
        assert_eq!(v["skipped_sizes"], serde_json::json!([4 * MIB]));
        let back: SizeStats = serde_json::from_value(v["systems"]["slime"][0].clone()).expect("stats");
        assert_eq!(back, s.systems["slime"][0]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unwritable_path_is_an_error() {
        let dir = unique_temp_dir("summary-bad");
        // A file where the parent directory should be.
        let blocker = dir.join("blocker");
        std::fs::write(&blocker, "x").expect("write");
        let err = write_summary(&blocker.join("summary.json"), &sample_summary());
        assert!(matches!(err, Err(SummaryError::CreateDir { .. })), "{err:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn hostname_is_trimmed_and_non_empty() {
        let h = hostname();
        assert!(!h.is_empty());
        assert_eq!(h, h.trim());
    }
}
