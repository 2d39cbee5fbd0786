//! The Python baselines (Ray, Pulsing): finding Python, the "not installed" errors, the
//! scripts' command line, the runner's error paths and timeout with a fake Python (these run
//! everywhere), and a tiny real run of each peer when the project's venv has it.
//!
//! Real runs skip out loud without the venv; `SLIMEBENCH_REQUIRE_BASELINES=1` turns the skip
//! into a failure. `SLIMEBENCH_BASELINE_OUT=DIR cargo test --test tests full_sweep -- --ignored
//! --nocapture` runs both peers over the full default plan into DIR and draws the charts.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use slimebench::bench::baselines::{
    Baseline, BaselineError, PythonEnv, PythonSource, DEFAULT_TIMEOUT, PULSING_VERSION, RAY_VERSION,
};
use slimebench::bench::csv::CSV_HEADER;
use slimebench::bench::plan::{SweepPlan, MIB, WARMUP};

use crate::util::scratch_dir;

/// Ray and Pulsing each want both cores; real runs (and the fake ones, for tidy `ps`) take turns.
static RUNS: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    RUNS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An executable shell script at `dir/name`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write fake python");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn fake_venv(root: &Path) -> PathBuf {
    let bin = root.join(".venv/bin");
    std::fs::create_dir_all(&bin).expect("mkdir venv");
    script(&bin, "python", "exit 0")
}

/// The project's venv Python if it has `b`; otherwise skips out loud (or panics when
/// SLIMEBENCH_REQUIRE_BASELINES=1).
fn python_with(b: Baseline) -> Option<PythonEnv> {
    let require = std::env::var("SLIMEBENCH_REQUIRE_BASELINES").is_ok_and(|v| v == "1");
    let found = PythonEnv::discover(None).and_then(|py| py.check(b).map(|_| py));
    match found {
        Ok(py) => Some(py),
        Err(e) if require => panic!("SLIMEBENCH_REQUIRE_BASELINES=1, but the {b} baseline is unavailable: {e}"),
        Err(e) => {
            eprintln!("SKIPPED: {b} baseline test: {e} (set SLIMEBENCH_REQUIRE_BASELINES=1 to fail instead)");
            None
        }
    }
}

/// Any Python 3 for the scripts' argument checks (they fail before importing a framework).
fn any_python() -> Option<PathBuf> {
    if let Ok(py) = PythonEnv::discover(None) {
        return Some(py.python().to_path_buf());
    }
    match PythonEnv::discover(Some(Path::new("python3"))) {
        Ok(py) => Some(py.python().to_path_buf()),
        Err(e) => {
            eprintln!("SKIPPED: script argument tests: no Python 3 found ({e})");
            None
        }
    }
}

/// Live processes with an environment variable starting with `prefix` (e.g. `HOME=<run dir>`,
/// which every process a run starts inherits).
fn processes_with_env_prefix(prefix: &str) -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let env = std::fs::read(e.path().join("environ")).ok()?;
        let hit = env.split(|&b| b == 0).any(|var| var.starts_with(prefix.as_bytes()));
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        hit.then_some((pid, cmd))
    })
    .collect()
}

fn assert_no_survivors(run_dir: &Path) {
    let prefix = format!("HOME={}", run_dir.display());
    let survivors = processes_with_env_prefix(&prefix);
    assert!(survivors.is_empty(), "processes with {prefix} survived: {survivors:#?}");
}

#[test]
fn discovery_order() {
    let dir = scratch_dir("py-discovery");
    let (cwd, manifest, missing) = (dir.join("cwd"), dir.join("manifest"), dir.join("missing"));
    let cwd_python = fake_venv(&cwd);
    let manifest_python = fake_venv(&manifest);
    let flag = script(&dir, "flag-python", "exit 0");
    let env = script(&dir, "env-python", "exit 0");
    let roots = vec![cwd.clone(), manifest.clone()];

    let py = PythonEnv::discover_from(Some(&flag), Some(env.as_os_str()), &roots).expect("flag");
    assert_eq!((py.python(), py.source()), (flag.as_path(), &PythonSource::Explicit));
    let py = PythonEnv::discover_from(None, Some(env.as_os_str()), &roots).expect("env");
    assert_eq!((py.python(), py.source()), (env.as_path(), &PythonSource::EnvVar));
    // An empty variable counts as unset.
    let py = PythonEnv::discover_from(None, Some(OsStr::new("")), &roots).expect("cwd venv");
    assert_eq!(py.python(), cwd_python);
    assert_eq!(py.source(), &PythonSource::Venv { root: cwd.clone() });
    let py = PythonEnv::discover_from(None, None, &[missing.clone(), manifest.clone()]).expect("manifest venv");
    assert_eq!(py.python(), manifest_python);

    let err = PythonEnv::discover_from(None, None, &[missing.clone(), dir.join("also-missing")]).unwrap_err();
    assert!(
        matches!(err, BaselineError::NoPython { ref tried } if tried.len() == 2),
        "{err:?}"
    );
    let msg = err.to_string();
    for needle in [
        "--python",
        "SLIMEBENCH_PYTHON",
        "just setup",
        "ray==2.60.0",
        "pulsing==0.1.2",
        "missing/.venv/bin/python",
        "also-missing/.venv/bin/python",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in: {msg}");
    }

    // A given path that does not exist is an error, not a fall-through to the venv.
    let err = PythonEnv::discover_from(Some(&dir.join("nope")), None, &roots).unwrap_err();
    assert!(
        matches!(
            err,
            BaselineError::PythonMissing {
                source_name: "--python",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("nope"));
    let err = PythonEnv::discover_from(None, Some(dir.join("nope").as_os_str()), &roots).unwrap_err();
    assert!(err.to_string().contains("SLIMEBENCH_PYTHON"), "{err}");
    // A bare command name is looked up on PATH.
    let py = PythonEnv::discover_from(Some(Path::new("sh")), None, &[]).expect("sh on PATH");
    assert!(py.python().is_absolute() && py.python().ends_with("sh"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn not_installed_errors_name_the_install_command() {
    let dir = scratch_dir("py-not-installed");
    let fake = script(
        &dir,
        "python",
        r#"echo '{"missing": "No module named '"'"'ray'"'"'"}'; exit 3"#,
    );
    let py = PythonEnv::discover_from(Some(&fake), None, &[]).expect("fake");
    for (b, requirement) in [
        (Baseline::Ray, format!("ray=={RAY_VERSION}")),
        (Baseline::Pulsing, format!("pulsing=={PULSING_VERSION}")),
    ] {
        let err = py.check(b).unwrap_err();
        assert!(matches!(err, BaselineError::NotInstalled { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("just setup"), "{msg}");
        assert!(
            msg.contains(&format!("{} -m pip install {requirement}", fake.display())),
            "{msg}"
        );
        assert!(msg.contains("No module named"), "{msg}");
    }

    // An import that fails for another reason quotes what Python said.
    let broken = script(
        &dir,
        "broken-python",
        "echo 'ImportError: libstdc++.so.6: cannot open shared object file' >&2; exit 1",
    );
    let err = PythonEnv::discover_from(Some(&broken), None, &[])
        .expect("broken")
        .check(Baseline::Ray)
        .unwrap_err();
    assert!(matches!(err, BaselineError::ImportFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("libstdc++"), "{err}");

    // A Python that cannot start.
    let not_exec = dir.join("not-executable");
    std::fs::write(&not_exec, "").expect("write");
    let err = PythonEnv::discover_from(Some(&not_exec), None, &[])
        .expect("exists")
        .check(Baseline::Ray)
        .unwrap_err();
    assert!(matches!(err, BaselineError::Spawn { .. }), "{err:?}");

    // A real interpreter without site-packages: the genuine ModuleNotFoundError path.
    match PythonEnv::discover(Some(Path::new("python3"))) {
        Ok(real) => {
            let bare = script(
                &dir,
                "bare-python",
                &format!("exec {} -I -S \"$@\"", real.python().display()),
            );
            let err = PythonEnv::discover_from(Some(&bare), None, &[])
                .expect("bare")
                .check(Baseline::Pulsing)
                .unwrap_err();
            assert!(matches!(err, BaselineError::NotInstalled { .. }), "{err:?}");
            assert!(err.to_string().contains("pulsing==0.1.2"), "{err}");
        }
        Err(e) => eprintln!("SKIPPED: real-interpreter part of not_installed test: {e}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A fake Python for `run`: finds `--out` in its arguments and runs `body` with $OUT set.
fn fake_runner(dir: &Path, name: &str, body: &str) -> PythonEnv {
    let text =
        format!("OUT=''\nwhile [ $# -gt 0 ]; do if [ \"$1\" = --out ]; then OUT=\"$2\"; fi; shift; done\n{body}");
    let path = script(dir, name, &text);
    PythonEnv::discover_from(Some(&path), None, &[]).expect("fake runner")
}

#[test]
fn run_error_paths_with_a_fake_python() {
    let _turn = one_at_a_time();
    let dir = scratch_dir("py-run-errors");
    let plan = SweepPlan::new(4096, 1, Some(3));
    let limit = Duration::from_secs(60);

    let py = fake_runner(&dir, "missing", "echo 'error: cannot import ray' >&2; exit 3");
    let err = py.run(Baseline::Ray, &plan, &dir.join("r1"), limit).unwrap_err();
    assert!(matches!(err, BaselineError::NotInstalled { .. }), "{err:?}");
    assert!(err.to_string().contains("ray==2.60.0"), "{err}");

    let py = fake_runner(
        &dir,
        "fails",
        "echo '{\"event\": \"error\", \"message\": \"size 1024: reply differs from the payload at byte 7\"}'\n\
         echo 'Traceback: boom' >&2; exit 1",
    );
    let run_dir = dir.join("r2");
    let err = py.run(Baseline::Pulsing, &plan, &run_dir, limit).unwrap_err();
    assert!(matches!(err, BaselineError::ScriptFailed { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("exit code 1") && msg.contains("differs from the payload at byte 7"),
        "{msg}"
    );
    assert!(msg.contains("pulsing.log"), "{msg}");
    assert!(std::fs::read_to_string(run_dir.join("pulsing.log"))
        .expect("log")
        .contains("Traceback: boom"));
    assert!(run_dir.join("pulsing/pulsing_echo.py").is_file() && run_dir.join("pulsing/echo_common.py").is_file());

    let py = fake_runner(
        &dir,
        "usage",
        "echo 'usage: x\nray_echo.py: error: --sizes: bad' >&2; exit 2",
    );
    let err = py.run(Baseline::Ray, &plan, &dir.join("r3"), limit).unwrap_err();
    assert!(matches!(err, BaselineError::Usage { .. }), "{err:?}");
    assert!(
        err.to_string().contains("--sizes 1024,4096 --warmup 1 --iters 3"),
        "{err}"
    );

    let py = fake_runner(&dir, "crash", "kill -SEGV $$");
    let err = py.run(Baseline::Ray, &plan, &dir.join("r4"), limit).unwrap_err();
    assert!(err.to_string().contains("signal 11"), "{err}");

    let py = fake_runner(&dir, "no-csv", "exit 0");
    let err = py.run(Baseline::Ray, &plan, &dir.join("r5"), limit).unwrap_err();
    assert!(matches!(err, BaselineError::Csv { .. }), "{err:?}");

    let py = fake_runner(
        &dir,
        "short-csv",
        &format!("printf '{CSV_HEADER}\\n1024,5,5,6,0.4\\n' > \"$OUT\""),
    );
    let err = py.run(Baseline::Ray, &plan, &dir.join("r6"), limit).unwrap_err();
    assert!(
        matches!(err, BaselineError::IncompleteCsv { ref got, .. } if got == &[1024]),
        "{err:?}"
    );

    let py = fake_runner(
        &dir,
        "ok",
        &format!(
            "echo '{{\"event\": \"versions\", \"python\": \"3.11.7\", \"ray\": \"2.59.0\"}}'\n\
             echo '{{\"event\": \"workaround\", \"name\": \"w\", \"active\": true, \"detail\": \"d\"}}'\n\
             printf '{CSV_HEADER}\\n1024,5,5,6,0.4\\n4096,6,6,7,1.3\\n' > \"$OUT\""
        ),
    );
    let run_dir = dir.join("r7");
    let result = py.run(Baseline::Ray, &plan, &run_dir, limit).expect("fake success");
    assert_eq!(result.rows.len(), 2);
    assert_eq!(result.csv_path, run_dir.join("ray_rpc.csv"));
    assert_eq!(result.versions.version, "2.59.0");
    assert!(!result.versions.is_pinned());
    let notes = result.notes().join("\n");
    assert!(notes.contains("ray: workaround w ACTIVE: d"), "{notes}");
    assert!(notes.contains("differs from the pinned 2.60.0"), "{notes}");

    assert!(matches!(
        py.run(Baseline::Ray, &SweepPlan { sizes: vec![] }, &dir.join("r8"), limit),
        Err(BaselineError::EmptyPlan(Baseline::Ray))
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn run_timeout_kills_every_process_of_the_run() {
    let _turn = one_at_a_time();
    let dir = scratch_dir("py-run-timeout");
    // Like Ray: a helper in its own session (outside the process group), then a hang.
    let py = fake_runner(&dir, "hang", "setsid sleep 300 &\nsleep 300");
    let run_dir = dir.join("run");
    let started = Instant::now();
    let err = py
        .run(
            Baseline::Ray,
            &SweepPlan::new(1024, 1, Some(1)),
            &run_dir,
            Duration::from_millis(500),
        )
        .unwrap_err();
    assert!(matches!(err, BaselineError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("ray.log"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_no_survivors(&run_dir);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn scripts_reject_bad_arguments() {
    let Some(python) = any_python() else {
        return;
    };
    let dir = scratch_dir("py-args");
    let out = dir.join("out.csv");
    let out = out.to_str().expect("utf-8 path");
    for b in [Baseline::Ray, Baseline::Pulsing] {
        let script = b.write_scripts(&dir.join(b.name())).expect("write scripts");
        let mut cases: Vec<(Vec<&str>, &str)> = vec![
            (vec!["--sizes", "", "--out", out], "--sizes"),
            (vec!["--sizes", "0", "--out", out], "--sizes"),
            (vec!["--sizes", "1024,-5", "--out", out], "--sizes"),
            (vec!["--sizes", "1k", "--out", out], "--sizes"),
            (vec!["--sizes", "1024", "--iters", "0", "--out", out], "--iters"),
            (vec!["--sizes", "1024", "--warmup", "-1", "--out", out], "--warmup"),
            (
                vec!["--sizes", "1024,2048", "--warmup", "1,2,3", "--out", out],
                "--warmup",
            ),
            (vec!["--sizes", "1024"], "--out"),
            (vec!["--out", out], "--sizes"),
        ];
        match b {
            Baseline::Ray => cases.push((vec!["--sizes", "1024", "--num-cpus", "0", "--out", out], "--num-cpus")),
            Baseline::Pulsing => cases.push((vec!["--sizes", "1024", "--nodelay", "maybe", "--out", out], "--nodelay")),
        }
        for (args, flag) in cases {
            let output = Command::new(&python)
                .arg(&script)
                .args(&args)
                .output()
                .expect("run script");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{b} {args:?}: {stderr}");
            assert!(
                stderr.contains("error:") && stderr.contains(flag),
                "{b} {args:?}: {stderr}"
            );
            assert!(stderr.contains("usage:"), "{b} {args:?}: {stderr}");
        }
        let help = Command::new(&python).arg(&script).arg("--help").output().expect("help");
        assert!(help.status.success());
        assert!(String::from_utf8_lossy(&help.stdout).contains("--sizes"));
    }
    assert!(!Path::new(out).exists());
    let _ = std::fs::remove_dir_all(dir);
}

fn tiny_run(b: Baseline) {
    let Some(py) = python_with(b) else {
        return;
    };
    let _turn = one_at_a_time();
    let run_dir = scratch_dir(&format!("{}-tiny", b.name()));
    let plan = SweepPlan::new(1024, 1, Some(3));
    let result = py
        .run(b, &plan, &run_dir, Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{b} tiny run: {e}"));
    assert_eq!(result.rows.len(), 1);
    let row = &result.rows[0];
    assert_eq!(row.size, 1024);
    assert!(
        row.avg_us > 0.0 && row.p50_us > 0.0 && row.p50_us <= row.p99_us,
        "{row:?}"
    );
    assert!(
        (row.bw_gbps - 2.0 * 1024.0 / (row.avg_us * 1e3)).abs() < 1e-12,
        "{row:?}"
    );
    let csv = std::fs::read_to_string(&result.csv_path).expect("csv");
    assert_eq!(csv.lines().next(), Some(CSV_HEADER));
    assert_eq!(csv.lines().count(), 2);
    assert!(result.versions.is_pinned(), "{:?}", result.versions);
    assert!(result.log_path.is_file() && result.events_path.is_file());
    // HOME was scratch for the run and is gone.
    assert!(!run_dir.join(b.name()).join("home").exists());
    assert_no_survivors(&run_dir);
    let notes = result.notes().join("\n");
    eprintln!("{b}: {row:?} in {:?}\n{notes}", result.elapsed);
    match b {
        Baseline::Ray => {
            // Isolation: Ray's session and ~/.ray went into the run directory.
            assert!(run_dir.join("ray/ray-tmp/session_latest").exists());
            let log = std::fs::read_to_string(&result.log_path).expect("log");
            let home_ray = format!("{}/ray/home/.ray/", run_dir.display());
            assert!(log.contains(&home_ray), "Ray wrote ~/.ray outside {home_ray}:\n{log}");
        }
        Baseline::Pulsing => {
            let active: Vec<&str> = result
                .workarounds
                .iter()
                .filter(|w| w.active)
                .map(|w| w.name.as_str())
                .collect();
            assert!(active.contains(&"tcp_nodelay"), "{notes}");
            assert!(active.contains(&"os_exit"), "{notes}");
            assert!(result.workarounds.iter().any(|w| w.name == "ask_direct"), "{notes}");
            assert!(notes.contains("pulsing: workaround tcp_nodelay ACTIVE"), "{notes}");
        }
    }
    let _ = std::fs::remove_dir_all(run_dir);
}

#[test]
fn ray_tiny_run() {
    tiny_run(Baseline::Ray);
}

#[test]
fn pulsing_tiny_run() {
    tiny_run(Baseline::Pulsing);
}

#[test]
fn ray_timeout_leaves_no_ray_process() {
    let Some(py) = python_with(Baseline::Ray) else {
        return;
    };
    let _turn = one_at_a_time();
    let run_dir = scratch_dir("ray-timeout");
    // 9 s: long enough for Ray to start its ~10 processes and the sweep to be under way; the
    // plan (8 sizes x 5000 calls) cannot finish by then on any machine.
    let plan = SweepPlan::new(16 * MIB, WARMUP, Some(5000));
    let err = py
        .run(Baseline::Ray, &plan, &run_dir, Duration::from_secs(9))
        .unwrap_err();
    assert!(matches!(err, BaselineError::Timeout { .. }), "{err:?}");
    let log = std::fs::read_to_string(run_dir.join("ray.log")).unwrap_or_default();
    assert!(log.contains("Ray"), "Ray had not started when killed; log:\n{log}");
    assert_no_survivors(&run_dir);
    let _ = std::fs::remove_dir_all(run_dir);
}

/// Both peers over the full default plan (1KB–16MB) into `$SLIMEBENCH_BASELINE_OUT`, with
/// the charts. By hand: `SLIMEBENCH_BASELINE_OUT=/tmp/b cargo test --test tests full_sweep --
/// --ignored --nocapture`.
#[test]
#[ignore = "minutes long; run by hand with SLIMEBENCH_BASELINE_OUT=DIR"]
fn full_sweep_by_hand() {
    let Some(out) = std::env::var_os("SLIMEBENCH_BASELINE_OUT") else {
        eprintln!("SKIPPED: set SLIMEBENCH_BASELINE_OUT=DIR");
        return;
    };
    let out = PathBuf::from(out);
    let plan = SweepPlan::new(16 * MIB, WARMUP, None);
    let mut systems = Vec::new();
    for b in [Baseline::Ray, Baseline::Pulsing] {
        let Some(py) = python_with(b) else {
            continue;
        };
        let _turn = one_at_a_time();
        let result = py
            .run(b, &plan, &out, DEFAULT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{b}: {e}"));
        eprintln!(
            "{b}: {} rows in {:?}, leftovers killed: {}\n{}",
            result.rows.len(),
            result.elapsed,
            result.leftover_processes_killed,
            result.notes().join("\n")
        );
        eprintln!("{}", std::fs::read_to_string(&result.csv_path).expect("csv"));
        assert_no_survivors(&out);
        systems.push((b.system(), result.rows));
    }
    if !systems.is_empty() {
        let paths = slimebench::bench::plot::write_plots(&out, &systems, "baselines").expect("plots");
        eprintln!("charts: {paths:?}");
    }
}
