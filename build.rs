//! Records the git commit the binary was built from, for summary.json.
use std::process::Command;

fn main() {
    let sha = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    if let Some(sha) = sha {
        let sha = if dirty { format!("{sha}-dirty") } else { sha };
        println!("cargo:rustc-env=SLIMEBENCH_GIT_SHA={sha}");
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if let Some(v) = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
    {
        println!(
            "cargo:rustc-env=SLIMEBENCH_RUSTC={}",
            String::from_utf8_lossy(&v.stdout).trim()
        );
    }
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
}
