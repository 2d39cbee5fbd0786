//! The binary itself: bad flags give one clear line and a non-zero exit.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_slimebench"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn zero_max_size_is_a_one_line_error() {
    let (code, _, err) = run(&["sweep", "--max-size-mb", "0", "--quiet"]);
    assert_ne!(code, 0);
    assert_eq!(err.trim(), "error: --max-size-mb must be at least 1");
}

#[test]
fn unknown_transport_is_refused() {
    let (code, _, err) = run(&["sweep", "--transport", "foo"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid value 'foo'"), "{err}");
}

#[test]
fn unknown_control_plane_is_refused() {
    let (code, _, err) = run(&["sweep", "--ctrl", "nonsense://x"]);
    assert_eq!(code, 2);
    assert!(err.contains("unsupported control plane"), "{err}");
}

#[test]
fn rdma_without_support_names_the_alternative() {
    let (code, _, err) = run(&["sweep", "--transport", "rdma", "--quiet"]);
    assert_ne!(code, 0);
    // Without the feature: "this build has no RDMA support"; with it, on this
    // machine: "kernel without RDMA support". Either way: the cause and the way out.
    assert!(
        err.contains("--transport rdma:") && err.contains("RDMA support"),
        "{err}"
    );
    assert!(err.contains("--transport tcp"), "{err}");
}

#[test]
fn env_forms_are_read() {
    let out = Command::new(env!("CARGO_BIN_EXE_slimebench"))
        .args(["sweep", "--quiet"])
        .env("MAX_SIZE_MB", "0")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-size-mb must be at least 1"));
}

#[test]
fn compare_reads_the_originals_published_csvs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results/reference");
    let (code, out, err) = run(&["compare", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // 1KB: Ray 321.04 us / Slime 52.22 us, as the original reports.
    assert!(out.contains("6.15x"), "{out}");
}

#[test]
fn compare_of_an_empty_dir_is_an_error() {
    let dir = crate::util::scratch_dir("empty");
    let (code, _, err) = run(&["compare", dir.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("slime_rpc.csv"), "{err}");
}
