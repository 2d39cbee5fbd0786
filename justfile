# slimebench tasks. `just` itself: `pip install rust-just` (seconds) or `cargo install just`.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# The echo sweep with the floor beside it (extra flags pass through, e.g. `just bench --max-size-mb 64`).
bench *ARGS:
    cargo run --release -- sweep --with-floor {{ARGS}}

# The test suite (what CI runs).
test:
    cargo test --workspace

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
