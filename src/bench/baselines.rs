//! Runs the Python peers — Ray and Pulsing — through the same echo sweep as ours.
//!
//! The scripts live in `src/bench/py/` and are carried in the binary (`include_str!`), so a
//! release binary needs only a Python with the framework installed. For each run the scripts
//! are written into the run directory (`<run_dir>/<name>/`) and run there, isolated:
//!
//! - `HOME` and the XDG directories point into `<run_dir>/<name>/home` (removed after the
//!   run), since Ray writes `~/.ray` (auth token, usage-stats settings); Ray's temp dir (sessions, logs, sockets) is
//!   `<run_dir>/ray/ray-tmp`, reached through a short symlink under `/tmp` when the real path is
//!   too long for AF_UNIX socket names;
//! - the script starts in its own process group with a wall-clock timeout; on timeout, error or
//!   drop, every process that carries the run's token in its environment (Ray's raylet, GCS and
//!   workers start their own sessions, so a process group alone would miss them) is killed, and
//!   so is the group;
//! - stderr goes to `<run_dir>/<name>.log`, stdout (JSON lines: versions, workarounds, per-size
//!   results) to `<run_dir>/<name>.events.jsonl`, and the CSV to `<run_dir>/<name>_rpc.csv`,
//!   where [`crate::bench::table::load_dir`] finds it.
//!
//! The scripts measure exactly as [`crate::bench::stats`] does; see `py/echo_common.py`.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::csv::{read_csv, CsvError, CsvRow};
use super::plan::{iters_for, SweepPlan};
use super::table::System;

/// The Ray version the baseline is pinned to (`pip install ray==2.60.0`).
pub const RAY_VERSION: &str = "2.60.0";
/// The Pulsing version the baseline is pinned to; its workarounds are for this version's defects.
pub const PULSING_VERSION: &str = "0.1.2";
/// The environment variable naming the Python to use when `--python` is not given.
pub const PYTHON_ENV_VAR: &str = "SLIMEBENCH_PYTHON";
/// A full 1KB–16MB sweep takes well under a minute per peer on a 2-core VM (Pulsing without
/// its TCP_NODELAY workaround a few minutes); this bounds a hung runtime, not a slow one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long importing the framework may take in [`PythonEnv::check`] (Ray imports in ~2 s).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// The shared method (plan, statistics, CSV) of both scripts.
pub const COMMON_SCRIPT: &str = include_str!("py/echo_common.py");
/// The Ray script: an isolated local runtime and a local `EchoActor`.
pub const RAY_SCRIPT: &str = include_str!("py/ray_echo.py");
/// The Pulsing script: an `EchoActor` in a second process, called through `ref.ask`.
pub const PULSING_SCRIPT: &str = include_str!("py/pulsing_echo.py");

/// The environment variable carrying a run's token; every process a run starts inherits it,
/// which is how leftovers are found after the script exits.
const TOKEN_VAR: &str = "SLIMEBENCH_BASELINE_TOKEN";
/// Script exit codes (see `py/echo_common.py`).
const EXIT_USAGE: i32 = 2;
const EXIT_NOT_INSTALLED: i32 = 3;
/// Ray puts `<temp>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store` under its temp dir,
/// and an AF_UNIX path has at most 107 bytes: the temp dir may have 43.
const MAX_RAY_TEMP_DIR_LEN: usize = 43;
/// Lines of the log quoted in an error.
const LOG_TAIL_LINES: usize = 15;

/// A Python peer the harness can compare against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Baseline {
    /// Ray: a local actor in an isolated local runtime (10 processes).
    Ray,
    /// Pulsing: an actor in a second Python process, over Pulsing's TCP transport.
    Pulsing,
}

impl Baseline {
    /// Both peers, in the order the table shows them.
    pub const ALL: [Baseline; 2] = [Baseline::Pulsing, Baseline::Ray];

    /// Short lowercase name: file and directory names, and the Python module.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Ray => "ray",
            Baseline::Pulsing => "pulsing",
        }
    }

    /// The Python module imported to run this peer.
    pub fn module(self) -> &'static str {
        self.name()
    }

    /// The version this harness is pinned to.
    pub fn pinned_version(self) -> &'static str {
        match self {
            Baseline::Ray => RAY_VERSION,
            Baseline::Pulsing => PULSING_VERSION,
        }
    }

    /// The system this peer's results are filed under (CSV name, table column).
    pub fn system(self) -> System {
        match self {
            Baseline::Ray => System::Ray,
            Baseline::Pulsing => System::Pulsing,
        }
    }

    /// The script's file name.
    pub fn script_name(self) -> &'static str {
        match self {
            Baseline::Ray => "ray_echo.py",
            Baseline::Pulsing => "pulsing_echo.py",
        }
    }

    /// The script's text, as built into the binary.
    pub fn script_source(self) -> &'static str {
        match self {
            Baseline::Ray => RAY_SCRIPT,
            Baseline::Pulsing => PULSING_SCRIPT,
        }
    }

    /// The pip requirement, e.g. `ray==2.60.0`.
    pub fn requirement(self) -> String {
        format!("{}=={}", self.module(), self.pinned_version())
    }

    /// How to install this peer into `python`'s environment, for error messages.
    pub fn install_hint(self, python: &Path) -> String {
        format!(
            "run `just setup`, or `{} -m pip install {}`",
            python.display(),
            self.requirement()
        )
    }

    /// Writes the script and its shared module into `dir` (created if needed); returns the
    /// script's path. Used by [`PythonEnv::run`]; public so the scripts can be run by hand.
    ///
    /// # Errors
    ///
    /// [`BaselineError::RunDir`] if the directory or a file cannot be written.
    pub fn write_scripts(self, dir: &Path) -> Result<PathBuf, BaselineError> {
        create_dir(dir)?;
        write_file(&dir.join("echo_common.py"), COMMON_SCRIPT)?;
        let script = dir.join(self.script_name());
        write_file(&script, self.script_source())?;
        Ok(script)
    }
}

impl fmt::Display for Baseline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.system().label())
    }
}

/// Where the Python came from, for messages and `summary.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PythonSource {
    /// Given explicitly (the `--python` flag).
    Explicit,
    /// From the `SLIMEBENCH_PYTHON` environment variable.
    EnvVar,
    /// The project's virtual environment `<root>/.venv`.
    Venv {
        /// The directory holding `.venv`.
        root: PathBuf,
    },
}

/// The Python interpreter the baselines run with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PythonEnv {
    python: PathBuf,
    source: PythonSource,
}

/// The versions found in the Python environment, for the run's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Versions {
    /// The peer these versions belong to.
    pub baseline: Baseline,
    /// The interpreter used, as found (not resolved: a venv's python is a symlink).
    pub python_path: PathBuf,
    /// The Python version, e.g. "3.11.7".
    pub python: String,
    /// The framework's `__version__`, e.g. "2.60.0".
    pub version: String,
}

impl Versions {
    /// Whether the installed framework is the pinned version.
    pub fn is_pinned(&self) -> bool {
        self.version == self.baseline.pinned_version()
    }
}

/// A workaround a script applied (or chose not to) for a defect of its framework.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Workaround {
    /// Short name, e.g. "tcp_nodelay".
    pub name: String,
    /// Whether it was in force for the measured calls.
    pub active: bool,
    /// What it does and why, in the script's words.
    pub detail: String,
}

/// One finished baseline run.
#[derive(Clone, Debug)]
pub struct BaselineResult {
    /// The peer that ran.
    pub baseline: Baseline,
    /// One row per planned size, in plan order, as read back from the CSV.
    pub rows: Vec<CsvRow>,
    /// Python and framework versions.
    pub versions: Versions,
    /// Workarounds the script announced (Pulsing: tcp_nodelay, ask_direct, os_exit).
    pub workarounds: Vec<Workaround>,
    /// Warnings the script printed (e.g. a version other than the pinned one, stalls seen).
    pub warnings: Vec<String>,
    /// The CSV the script wrote, `<run_dir>/<name>_rpc.csv`.
    pub csv_path: PathBuf,
    /// The script's stderr, `<run_dir>/<name>.log`.
    pub log_path: PathBuf,
    /// The script's stdout (JSON lines), `<run_dir>/<name>.events.jsonl`.
    pub events_path: PathBuf,
    /// Wall-clock time of the whole run, runtime start and shutdown included.
    pub elapsed: Duration,
    /// Processes of the run still alive after the framework shut down, killed by the script's
    /// own sweep or by the runner's (0 when the framework shut down cleanly).
    pub leftover_processes_killed: usize,
}

impl BaselineResult {
    /// Human-readable notes for the run's metadata: every workaround (active or not), every
    /// warning, a version other than the pinned one, and leftovers that had to be killed.
    pub fn notes(&self) -> Vec<String> {
        let name = self.baseline.name();
        let mut notes: Vec<String> = self
            .workarounds
            .iter()
            .map(|w| {
                let state = if w.active { "ACTIVE" } else { "off" };
                format!("{name}: workaround {} {state}: {}", w.name, w.detail)
            })
            .collect();
        notes.extend(self.warnings.iter().map(|w| format!("{name}: warning: {w}")));
        if !self.versions.is_pinned() {
            notes.push(format!(
                "{name}: version {} differs from the pinned {}",
                self.versions.version,
                self.baseline.pinned_version()
            ));
        }
        if self.leftover_processes_killed > 0 {
            notes.push(format!(
                "{name}: {} process(es) outlived the script and were killed",
                self.leftover_processes_killed
            ));
        }
        notes
    }
}

/// Why a baseline could not be checked or run.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// No Python was found: pass `--python PATH`, set `SLIMEBENCH_PYTHON`, or create the
    /// project's venv with `just setup`.
    #[error(
        "no Python for the baselines: pass --python PATH, set {PYTHON_ENV_VAR}, or create the venv with \
         `just setup` (python3 -m venv .venv && .venv/bin/python -m pip install ray=={RAY_VERSION} \
         pulsing=={PULSING_VERSION}); looked for {}",
        display_paths(tried)
    )]
    NoPython {
        /// The venv interpreters looked for, in order.
        tried: Vec<PathBuf>,
    },
    /// The Python given (flag or environment variable) does not exist: fix the path.
    #[error("Python {} (from {source_name}) does not exist or is not a file", path.display())]
    PythonMissing {
        /// The path given.
        path: PathBuf,
        /// Where it was given: "--python" or the environment variable.
        source_name: &'static str,
    },
    /// The interpreter could not be started: check that it is executable and not a broken venv.
    #[error("cannot start {}: {source}", python.display())]
    Spawn {
        /// The interpreter.
        python: PathBuf,
        /// The underlying IO error.
        source: io::Error,
    },
    /// The framework is not installed in this Python: install it as the message says.
    #[error("{baseline} is not installed in {}: {hint} ({detail})", python.display())]
    NotInstalled {
        /// The peer.
        baseline: Baseline,
        /// The interpreter checked.
        python: PathBuf,
        /// The install command.
        hint: String,
        /// Python's import error.
        detail: String,
    },
    /// Importing the framework failed for another reason (broken install, wrong Python
    /// version): read the output quoted, reinstall with `just setup`.
    #[error("importing {} with {} failed: {output}", baseline.module(), python.display())]
    ImportFailed {
        /// The peer.
        baseline: Baseline,
        /// The interpreter checked.
        python: PathBuf,
        /// What the interpreter printed.
        output: String,
    },
    /// Importing the framework took longer than [`CHECK_TIMEOUT`]: the machine is overloaded
    /// or the install is broken; retry, or reinstall with `just setup`.
    #[error("importing {} with {} did not finish within {after:?}", baseline.module(), python.display())]
    CheckTimeout {
        /// The peer.
        baseline: Baseline,
        /// The interpreter checked.
        python: PathBuf,
        /// The limit that passed.
        after: Duration,
    },
    /// The plan has no sizes: raise `--max-size-mb` to at least 1KB's worth.
    #[error("the sweep plan has no sizes: nothing to run for {0}")]
    EmptyPlan(Baseline),
    /// A file or directory of the run could not be written: check the path, free space and
    /// permissions.
    #[error("cannot write {}: {source}", path.display())]
    RunDir {
        /// The file or directory.
        path: PathBuf,
        /// The underlying IO error.
        source: io::Error,
    },
    /// The run passed its wall-clock limit and every process of it was killed: read the log
    /// for where it hung, or raise the timeout if the machine is just slow.
    #[error("{baseline} did not finish within {after:?}; killed it and its processes; log: {}", log.display())]
    Timeout {
        /// The peer.
        baseline: Baseline,
        /// The limit that passed.
        after: Duration,
        /// The script's log.
        log: PathBuf,
    },
    /// The script rejected its command line (exit 2): a bug in this runner; report it with the
    /// log.
    #[error("the {baseline} script rejected its arguments ({args}): {message}")]
    Usage {
        /// The peer.
        baseline: Baseline,
        /// The arguments passed.
        args: String,
        /// The script's usage message.
        message: String,
    },
    /// The script failed (an error, a crash, a reply that differed from the payload): read the
    /// message and the log.
    #[error("the {baseline} baseline failed ({status}): {message}; log: {}", log.display())]
    ScriptFailed {
        /// The peer.
        baseline: Baseline,
        /// How the script ended, e.g. "exit code 1" or "signal 11".
        status: String,
        /// The script's error message, or the end of its log.
        message: String,
        /// The script's log.
        log: PathBuf,
    },
    /// The script said it succeeded but its CSV could not be read: see the CSV error.
    #[error("the {baseline} baseline's CSV is unusable: {source}")]
    Csv {
        /// The peer.
        baseline: Baseline,
        /// The reading error.
        #[source]
        source: CsvError,
    },
    /// The CSV does not have one row per planned size: a bug in the script; report it with
    /// the CSV and the log.
    #[error("the {baseline} baseline's CSV {} has sizes {got:?}, the plan has {want:?}", path.display())]
    IncompleteCsv {
        /// The peer.
        baseline: Baseline,
        /// The CSV.
        path: PathBuf,
        /// The planned sizes.
        want: Vec<usize>,
        /// The sizes found.
        got: Vec<usize>,
    },
    /// Waiting for the script failed: an operating-system problem; retry.
    #[error("waiting for {}: {source}", python.display())]
    Wait {
        /// The interpreter.
        python: PathBuf,
        /// The underlying IO error.
        source: io::Error,
    },
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nothing".to_string();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The venv interpreter under `root`.
fn venv_python(root: &Path) -> PathBuf {
    root.join(".venv").join("bin").join("python")
}

impl PythonEnv {
    /// Finds the Python for the baselines, in this order: `explicit` (the `--python` flag),
    /// `$SLIMEBENCH_PYTHON`, `./.venv/bin/python` (the current directory), then the venv of
    /// the source tree this binary was built from (`CARGO_MANIFEST_DIR/.venv/bin/python`).
    ///
    /// A bare command name (`python3`) is looked up on `PATH`.
    ///
    /// # Errors
    ///
    /// [`BaselineError::PythonMissing`] if the flag or the variable names no file,
    /// [`BaselineError::NoPython`] if neither is given and no venv exists.
    pub fn discover(explicit: Option<&Path>) -> Result<PythonEnv, BaselineError> {
        let mut roots = Vec::new();
        if let Ok(cwd) = std::env::current_dir() {
            roots.push(cwd);
        }
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        if !roots.contains(&manifest) {
            roots.push(manifest);
        }
        let env_value = std::env::var_os(PYTHON_ENV_VAR);
        PythonEnv::discover_from(explicit, env_value.as_deref(), &roots)
    }

    /// [`PythonEnv::discover`] with its inputs given: the flag, the variable's value (an empty
    /// value counts as unset), and the directories whose `.venv` to try, in order.
    ///
    /// # Errors
    ///
    /// As [`PythonEnv::discover`].
    pub fn discover_from(
        explicit: Option<&Path>,
        env_value: Option<&OsStr>,
        venv_roots: &[PathBuf],
    ) -> Result<PythonEnv, BaselineError> {
        if let Some(path) = explicit {
            return PythonEnv::given(path, PythonSource::Explicit, "--python");
        }
        if let Some(value) = env_value.filter(|v| !v.is_empty()) {
            return PythonEnv::given(Path::new(value), PythonSource::EnvVar, PYTHON_ENV_VAR);
        }
        let mut tried = Vec::new();
        for root in venv_roots {
            let python = venv_python(root);
            if python.is_file() {
                return Ok(PythonEnv {
                    python,
                    source: PythonSource::Venv { root: root.clone() },
                });
            }
            tried.push(python);
        }
        Err(BaselineError::NoPython { tried })
    }

    fn given(path: &Path, source: PythonSource, source_name: &'static str) -> Result<PythonEnv, BaselineError> {
        let is_bare_name = path.components().count() == 1 && !path.as_os_str().is_empty() && !path.has_root();
        let found = if is_bare_name {
            find_on_path(path.as_os_str())
        } else {
            path.is_file().then(|| path.to_path_buf())
        };
        match found {
            Some(python) => Ok(PythonEnv { python, source }),
            None => Err(BaselineError::PythonMissing {
                path: path.to_path_buf(),
                source_name,
            }),
        }
    }

    /// The interpreter's path, as found (a venv's `python` is kept, not resolved).
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// Where the interpreter came from.
    pub fn source(&self) -> &PythonSource {
        &self.source
    }

    /// Imports `b`'s module (bounded by [`CHECK_TIMEOUT`]) and returns the versions found.
    ///
    /// # Errors
    ///
    /// [`BaselineError::NotInstalled`] with the install command when the module is missing,
    /// [`BaselineError::ImportFailed`] if importing fails otherwise,
    /// [`BaselineError::CheckTimeout`], or [`BaselineError::Spawn`] if Python cannot start.
    pub fn check(&self, b: Baseline) -> Result<Versions, BaselineError> {
        const SNIPPET: &str = "import json, sys\n\
name = sys.argv[1]\n\
try:\n    m = __import__(name)\n\
except ImportError as e:\n    print(json.dumps({'missing': str(e)}))\n    sys.exit(3)\n\
print(json.dumps({'python': '%d.%d.%d' % sys.version_info[:3], 'version': getattr(m, '__version__', 'unknown')}))\n";
        let mut cmd = Command::new(&self.python);
        cmd.arg("-c")
            .arg(SNIPPET)
            .arg(b.module())
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let outcome = run_bounded(cmd, CHECK_TIMEOUT).map_err(|e| self.process_error(e))?;
        let Some(output) = outcome.output else {
            return Err(BaselineError::CheckTimeout {
                baseline: b,
                python: self.python.clone(),
                after: CHECK_TIMEOUT,
            });
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let json = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok());
        let text = |v: &serde_json::Value, key: &str| v.get(key).and_then(|x| x.as_str()).map(str::to_string);
        match (output.status.code(), json) {
            (Some(0), Some(v)) => match (text(&v, "python"), text(&v, "version")) {
                (Some(python), Some(version)) => Ok(Versions {
                    baseline: b,
                    python_path: self.python.clone(),
                    python,
                    version,
                }),
                _ => Err(self.import_failed(b, &stdout, &stderr)),
            },
            (Some(EXIT_NOT_INSTALLED), Some(v)) if v.get("missing").is_some() => Err(BaselineError::NotInstalled {
                baseline: b,
                python: self.python.clone(),
                hint: b.install_hint(&self.python),
                detail: text(&v, "missing").unwrap_or_default(),
            }),
            _ => Err(self.import_failed(b, &stdout, &stderr)),
        }
    }

    fn import_failed(&self, b: Baseline, stdout: &str, stderr: &str) -> BaselineError {
        let both = format!("{stdout}{stderr}");
        BaselineError::ImportFailed {
            baseline: b,
            python: self.python.clone(),
            output: tail_lines(&both, LOG_TAIL_LINES),
        }
    }

    fn process_error(&self, e: ProcessError) -> BaselineError {
        match e {
            ProcessError::Spawn(source) => BaselineError::Spawn {
                python: self.python.clone(),
                source,
            },
            ProcessError::Wait(source) => BaselineError::Wait {
                python: self.python.clone(),
                source,
            },
        }
    }

    /// Runs `b` over `plan` in `run_dir`, within `timeout`, and returns its rows.
    ///
    /// Writes the script to `<run_dir>/<name>/`, its CSV to `<run_dir>/<name>_rpc.csv`, its
    /// stderr to `<run_dir>/<name>.log` and its stdout to `<run_dir>/<name>.events.jsonl`.
    /// Whatever happens, no process of the run survives this call (see the module docs).
    /// Call [`PythonEnv::check`] first for a friendlier error when the framework is missing.
    ///
    /// # Errors
    ///
    /// [`BaselineError::EmptyPlan`], [`BaselineError::RunDir`], [`BaselineError::Spawn`],
    /// [`BaselineError::Timeout`], [`BaselineError::NotInstalled`], [`BaselineError::Usage`],
    /// [`BaselineError::ScriptFailed`], [`BaselineError::Csv`], [`BaselineError::IncompleteCsv`]
    /// or [`BaselineError::Wait`].
    pub fn run(
        &self,
        b: Baseline,
        plan: &SweepPlan,
        run_dir: &Path,
        timeout: Duration,
    ) -> Result<BaselineResult, BaselineError> {
        if plan.sizes.is_empty() {
            return Err(BaselineError::EmptyPlan(b));
        }
        let started = Instant::now();
        create_dir(run_dir)?;
        let run_dir = std::path::absolute(run_dir).map_err(|source| BaselineError::RunDir {
            path: run_dir.to_path_buf(),
            source,
        })?;
        let name = b.name();
        let work_dir = run_dir.join(name);
        let home = work_dir.join("home");
        create_dir(&home)?;
        let script = b.write_scripts(&work_dir)?;
        let csv_path = run_dir.join(b.system().file_name());
        let log_path = run_dir.join(format!("{name}.log"));
        let events_path = run_dir.join(format!("{name}.events.jsonl"));
        // A stale CSV from an earlier run must not pass for this run's.
        remove_if_exists(&csv_path)?;

        let mut args = plan_args(plan);
        args.push("--out".into());
        args.push(csv_path.clone().into_os_string());
        let ray_tmp = work_dir.join("ray-tmp");
        let mut ray_tmp_link = None;
        if b == Baseline::Ray {
            create_dir(&ray_tmp)?;
            let link = ShortPath::new(&ray_tmp)?;
            args.push("--temp-dir".into());
            args.push(link.path().as_os_str().to_owned());
            ray_tmp_link = Some(link);
        }

        let log_file = create_file(&log_path)?;
        let events_file = create_file(&events_path)?;
        let mut cmd = Command::new(&self.python);
        cmd.arg(&script)
            .args(&args)
            .current_dir(&work_dir)
            .env("HOME", &home)
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            // address="local" ignores it, but an ambient cluster must not even be looked at.
            .env_remove("RAY_ADDRESS")
            .stdin(Stdio::null())
            .stdout(events_file)
            .stderr(log_file);
        tracing::info!(baseline = name, python = %self.python.display(), run_dir = %run_dir.display(), "starting baseline");
        let outcome = run_bounded(cmd, timeout).map_err(|e| self.process_error(e))?;
        if let Some(link) = ray_tmp_link.take() {
            relink_session_latest(&ray_tmp, link.path());
        }
        // HOME is scratch for the run; what Ray leaves there (~/.ray/auth_token, a token for a
        // cluster that no longer exists) has no place in an archived run directory.
        let _ = std::fs::remove_dir_all(&home);
        let events = read_events(&events_path);
        let Some(output) = outcome.output else {
            return Err(BaselineError::Timeout {
                baseline: b,
                after: timeout,
                log: log_path,
            });
        };
        let status = output.status;
        if status.code() != Some(0) {
            return Err(self.script_error(b, status, &events, &log_path, &args));
        }

        let rows = read_csv(&csv_path).map_err(|source| BaselineError::Csv { baseline: b, source })?;
        let want: Vec<usize> = plan.sizes.iter().map(|p| p.size).collect();
        let got: Vec<usize> = rows.iter().map(|r| r.size).collect();
        if want != got {
            return Err(BaselineError::IncompleteCsv {
                baseline: b,
                path: csv_path,
                want,
                got,
            });
        }
        let versions = events.versions(b, &self.python).unwrap_or_else(|| Versions {
            baseline: b,
            python_path: self.python.clone(),
            python: "unknown".into(),
            version: "unknown".into(),
        });
        let result = BaselineResult {
            baseline: b,
            rows,
            versions,
            workarounds: events.workarounds,
            warnings: events.warnings,
            csv_path,
            log_path,
            events_path,
            elapsed: started.elapsed(),
            leftover_processes_killed: outcome.leftovers_killed + events.reaped,
        };
        for note in result.notes() {
            tracing::info!("{note}");
        }
        Ok(result)
    }

    fn script_error(
        &self,
        b: Baseline,
        status: ExitStatus,
        events: &Events,
        log_path: &Path,
        args: &[OsString],
    ) -> BaselineError {
        let log_text = std::fs::read_to_string(log_path).unwrap_or_default();
        let tail = tail_lines(&log_text, LOG_TAIL_LINES);
        match status.code() {
            Some(EXIT_NOT_INSTALLED) => BaselineError::NotInstalled {
                baseline: b,
                python: self.python.clone(),
                hint: b.install_hint(&self.python),
                detail: events.error.clone().unwrap_or(tail),
            },
            Some(EXIT_USAGE) => BaselineError::Usage {
                baseline: b,
                args: args
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" "),
                message: tail,
            },
            _ => BaselineError::ScriptFailed {
                baseline: b,
                status: describe_status(status),
                message: events.error.clone().unwrap_or(tail),
                log: log_path.to_path_buf(),
            },
        }
    }
}

/// The script's command line for `plan` (without `--out`): `--sizes`, `--warmup`, and
/// `--iters` only when the plan departs from the original formula; per-size lists when the
/// values differ between sizes.
pub fn plan_args(plan: &SweepPlan) -> Vec<OsString> {
    let join = |values: &mut dyn Iterator<Item = usize>| values.map(|v| v.to_string()).collect::<Vec<_>>().join(",");
    let compact = |values: Vec<usize>| -> String {
        match values.first() {
            Some(first) if values.iter().all(|v| v == first) => first.to_string(),
            _ => join(&mut values.into_iter()),
        }
    };
    let mut args: Vec<OsString> = vec![
        "--sizes".into(),
        join(&mut plan.sizes.iter().map(|p| p.size)).into(),
        "--warmup".into(),
        compact(plan.sizes.iter().map(|p| p.warmup).collect()).into(),
    ];
    if plan.sizes.iter().any(|p| p.iters != iters_for(p.size)) {
        args.push("--iters".into());
        args.push(compact(plan.sizes.iter().map(|p| p.iters).collect()).into());
    }
    args
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "unknown status".to_string(),
    }
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

fn create_dir(path: &Path) -> Result<(), BaselineError> {
    std::fs::create_dir_all(path).map_err(|source| BaselineError::RunDir {
        path: path.to_path_buf(),
        source,
    })
}

fn create_file(path: &Path) -> Result<std::fs::File, BaselineError> {
    std::fs::File::create(path).map_err(|source| BaselineError::RunDir {
        path: path.to_path_buf(),
        source,
    })
}

fn write_file(path: &Path, text: &str) -> Result<(), BaselineError> {
    std::fs::write(path, text).map_err(|source| BaselineError::RunDir {
        path: path.to_path_buf(),
        source,
    })
}

fn remove_if_exists(path: &Path) -> Result<(), BaselineError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(BaselineError::RunDir {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn find_on_path(name: &OsStr) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// What the script said on stdout.
#[derive(Default)]
struct Events {
    versions: Option<(String, String)>,
    workarounds: Vec<Workaround>,
    warnings: Vec<String>,
    error: Option<String>,
    /// Leftover processes the script itself killed after its framework shut down.
    reaped: usize,
}

impl Events {
    fn versions(&self, b: Baseline, python: &Path) -> Option<Versions> {
        let (py, version) = self.versions.clone()?;
        Some(Versions {
            baseline: b,
            python_path: python.to_path_buf(),
            python: py,
            version,
        })
    }
}

/// Parses the script's JSON lines; lines that are not JSON (a library printing to stdout) are
/// skipped.
fn read_events(path: &Path) -> Events {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut events = Events::default();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim()) else {
            continue;
        };
        let text = |key: &str| v.get(key).and_then(|x| x.as_str()).map(str::to_string);
        match v.get("event").and_then(|e| e.as_str()) {
            Some("versions") => {
                let module = text("ray").or_else(|| text("pulsing"));
                if let (Some(py), Some(module)) = (text("python"), module) {
                    events.versions = Some((py, module));
                }
            }
            Some("workaround") => events.workarounds.push(Workaround {
                name: text("name").unwrap_or_default(),
                active: v.get("active").and_then(|a| a.as_bool()).unwrap_or(false),
                detail: text("detail").unwrap_or_default(),
            }),
            Some("warning") => events.warnings.extend(text("detail")),
            Some("reaped") => events.reaped += v.get("count").and_then(|c| c.as_u64()).unwrap_or(0) as usize,
            Some("error") => events.error = text("message").or(events.error.take()),
            _ => {}
        }
    }
    events
}

/// Ray's `session_latest` symlink points through the short link, which is about to go: make it
/// relative (`session_…`) so the kept run directory has no dangling link.
fn relink_session_latest(ray_tmp: &Path, short: &Path) {
    let latest = ray_tmp.join("session_latest");
    let Ok(target) = std::fs::read_link(&latest) else {
        return;
    };
    if let Ok(rest) = target.strip_prefix(short) {
        let rest = rest.to_path_buf();
        let _ = std::fs::remove_file(&latest);
        let _ = std::os::unix::fs::symlink(rest, &latest);
    }
}

/// A path short enough for Ray's socket names: the directory itself, or a fresh symlink to it
/// under the temp dir, removed on drop.
struct ShortPath {
    path: PathBuf,
    is_link: bool,
}

impl ShortPath {
    fn new(target: &Path) -> Result<ShortPath, BaselineError> {
        if target.as_os_str().len() <= MAX_RAY_TEMP_DIR_LEN {
            return Ok(ShortPath {
                path: target.to_path_buf(),
                is_link: false,
            });
        }
        let base = [std::env::temp_dir(), PathBuf::from("/tmp")]
            .into_iter()
            .find(|d| d.as_os_str().len() <= MAX_RAY_TEMP_DIR_LEN - 24)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        let link = base.join(format!("sbray-{}-{}", std::process::id(), unique()));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).map_err(|source| BaselineError::RunDir {
            path: link.clone(),
            source,
        })?;
        Ok(ShortPath {
            path: link,
            is_link: true,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ShortPath {
    fn drop(&mut self) {
        if self.is_link {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn unique() -> usize {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// How a bounded child run ended.
struct Outcome {
    /// The output, or `None` if the time limit passed and everything was killed.
    output: Option<std::process::Output>,
    /// Processes of the run found alive after the child ended, and killed.
    leftovers_killed: usize,
    /// The run's token (in every process's environment as `SLIMEBENCH_BASELINE_TOKEN`).
    #[cfg_attr(not(test), allow(dead_code))]
    token: String,
}

enum ProcessError {
    Spawn(io::Error),
    Wait(io::Error),
}

/// Kills every process of one run: the child's process group and every process whose
/// environment carries the run's token (wherever it was reparented, whatever its group).
/// Dropping it before [`RunReaper::finish`] kills too, so an unwinding caller leaks nothing.
struct RunReaper {
    pgid: i32,
    token: String,
    finished: bool,
}

impl RunReaper {
    /// Kills until none is left (bounded); returns how many distinct processes were found alive.
    fn reap(&self) -> usize {
        let mut killed = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
            unsafe {
                libc::kill(-self.pgid, libc::SIGKILL);
            }
            let alive = processes_with_env(TOKEN_VAR, &self.token);
            if alive.is_empty() || Instant::now() >= deadline {
                if !alive.is_empty() {
                    tracing::warn!(pids = ?alive, "baseline processes survived SIGKILL for 10 s");
                }
                return killed.len();
            }
            for pid in alive {
                // SAFETY: as above, for one process.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
                killed.insert(pid);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Reaps now, and not again on drop.
    fn finish(mut self) -> usize {
        self.finished = true;
        self.reap()
    }
}

impl Drop for RunReaper {
    fn drop(&mut self) {
        if !self.finished {
            self.reap();
        }
    }
}

/// Live processes whose initial environment holds `key=value` (zombies have none, and are
/// skipped: they are dead already).
fn processes_with_env(key: &str, value: &str) -> Vec<i32> {
    let needle = format!("{key}={value}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let environ = std::fs::read(entry.path().join("environ")).ok()?;
        environ
            .split(|&b| b == 0)
            .any(|var| var == needle.as_bytes())
            .then_some(pid)
    })
    .collect()
}

/// Runs `cmd` in its own process group with a run token, waits at most `timeout`, and leaves
/// no process of it behind, whatever happens (timeout, error, the caller unwinding).
fn run_bounded(mut cmd: Command, timeout: Duration) -> Result<Outcome, ProcessError> {
    let token = format!(
        "{}-{}-{}",
        std::process::id(),
        unique(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    cmd.env(TOKEN_VAR, &token).process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which
    // is async-signal-safe. If this thread dies (slimebench killed), the script gets SIGTERM,
    // which the scripts turn into a clean framework shutdown plus a sweep of the run's
    // processes (nothing would reap them otherwise: Ray's agents outlive a SIGKILLed driver).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(ProcessError::Spawn)?;
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    let reaper = RunReaper {
        pgid: pid,
        token: token.clone(),
        finished: false,
    };
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(timeout) {
        Ok(Ok(output)) => Some(output),
        Ok(Err(e)) => {
            drop(reaper);
            let _ = waiter.join();
            return Err(ProcessError::Wait(e));
        }
        Err(_) => None,
    };
    // After a timeout this kills the child, which ends the waiter; after an exit it catches
    // whatever the framework left running.
    let leftovers_killed = reaper.finish();
    let _ = waiter.join();
    Ok(Outcome {
        leftovers_killed: if output.is_some() { leftovers_killed } else { 0 },
        output,
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::{SizePlan, KIB, MIB, WARMUP};

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn plan_args_default_formula_omits_iters() {
        let plan = SweepPlan::new(16 * MIB, WARMUP, None);
        assert_eq!(
            strings(plan_args(&plan)),
            [
                "--sizes",
                "1024,4096,16384,65536,262144,1048576,4194304,16777216",
                "--warmup",
                "20"
            ]
        );
    }

    #[test]
    fn plan_args_override_and_lists() {
        let plan = SweepPlan::new(4 * KIB, 1, Some(3));
        assert_eq!(
            strings(plan_args(&plan)),
            ["--sizes", "1024,4096", "--warmup", "1", "--iters", "3"]
        );
        let plan = SweepPlan {
            sizes: vec![
                SizePlan {
                    size: 1024,
                    warmup: 2,
                    iters: 500,
                },
                SizePlan {
                    size: 2048,
                    warmup: 3,
                    iters: 7,
                },
            ],
        };
        assert_eq!(
            strings(plan_args(&plan)),
            ["--sizes", "1024,2048", "--warmup", "2,3", "--iters", "500,7"]
        );
    }

    #[test]
    fn pins_match_the_scripts() {
        assert!(RAY_SCRIPT.contains(&format!("RAY_VERSION = \"{RAY_VERSION}\"")));
        assert!(PULSING_SCRIPT.contains(&format!("PULSING_VERSION = \"{PULSING_VERSION}\"")));
        assert!(COMMON_SCRIPT.contains(&format!("CSV_HEADER = \"{}\"", crate::bench::csv::CSV_HEADER)));
        assert_eq!(Baseline::Ray.requirement(), "ray==2.60.0");
        assert_eq!(Baseline::Pulsing.requirement(), "pulsing==0.1.2");
        assert_eq!(Baseline::Ray.system().file_name(), "ray_rpc.csv");
        assert_eq!(Baseline::Pulsing.system().file_name(), "pulsing_rpc.csv");
    }

    #[test]
    fn events_are_parsed_and_junk_skipped() {
        let dir = crate::bench::csv::unique_temp_dir("baseline-events");
        let path = dir.join("e.jsonl");
        std::fs::write(
            &path,
            "not json\n{\"event\": \"versions\", \"python\": \"3.11.7\", \"pulsing\": \"0.1.2\"}\n\
             {\"event\": \"workaround\", \"name\": \"tcp_nodelay\", \"active\": true, \"detail\": \"d\"}\n\
             {\"event\": \"warning\", \"detail\": \"w\"}\n{\"event\": \"error\", \"message\": \"boom\"}\n\
             {\"event\": \"reaped\", \"count\": 2, \"pids\": [5, 6]}\n",
        )
        .expect("write");
        let e = read_events(&path);
        assert_eq!(e.versions, Some(("3.11.7".into(), "0.1.2".into())));
        assert_eq!(
            e.workarounds,
            [Workaround {
                name: "tcp_nodelay".into(),
                active: true,
                detail: "d".into()
            }]
        );
        assert_eq!(e.warnings, ["w"]);
        assert_eq!(e.error.as_deref(), Some("boom"));
        assert_eq!(e.reaped, 2);
        assert!(read_events(&dir.join("missing")).versions.is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn short_path_links_long_dirs_and_cleans_up() {
        let dir = crate::bench::csv::unique_temp_dir("baseline-short");
        let long = dir.join("a".repeat(60));
        std::fs::create_dir_all(&long).expect("mkdir");
        let link_path;
        {
            let short = ShortPath::new(&long).expect("link");
            link_path = short.path().to_path_buf();
            assert!(
                link_path.as_os_str().len() <= MAX_RAY_TEMP_DIR_LEN,
                "{}",
                link_path.display()
            );
            assert_eq!(
                std::fs::canonicalize(&link_path).ok(),
                std::fs::canonicalize(&long).ok()
            );
        }
        assert!(!link_path.exists() && link_path.symlink_metadata().is_err());
        let short = ShortPath::new(Path::new("/tmp/x")).expect("short");
        assert_eq!(short.path(), Path::new("/tmp/x"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bounded_run_kills_the_whole_tree_on_timeout() {
        // A shell that starts a grandchild in a new session (like Ray's workers) and hangs.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("setsid sleep 300 & sleep 300")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let started = Instant::now();
        let outcome = match run_bounded(cmd, Duration::from_millis(300)) {
            Ok(o) => o,
            Err(_) => panic!("sh could not be run"),
        };
        assert!(outcome.output.is_none());
        assert!(started.elapsed() < Duration::from_secs(15));
        // The setsid grandchild is in another session and group, and still it is gone.
        let survivors = processes_with_env(TOKEN_VAR, &outcome.token);
        assert!(survivors.is_empty(), "survivors: {survivors:?}");
    }

    #[test]
    fn bounded_run_reaps_leftovers_after_exit() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            // The pause lets the helper leave the process group before sh exits; otherwise the
            // group kill may get it first and nothing is left for the token sweep to count.
            .arg("setsid sleep 300 >/dev/null 2>&1 & sleep 0.5; echo hi")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let outcome = match run_bounded(cmd, Duration::from_secs(30)) {
            Ok(o) => o,
            Err(_) => panic!("sh could not be run"),
        };
        let output = outcome.output.expect("finished");
        assert!(output.status.success());
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "hi");
        assert_eq!(outcome.leftovers_killed, 1);
        assert!(processes_with_env(TOKEN_VAR, &outcome.token).is_empty());
    }
}
