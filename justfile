# slimebench tasks. `just` itself: `pip install rust-just` (seconds) or `cargo install just`.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Port of the private Redis that `redis-up` starts (not the system's 6379).
redis_port := env_var_or_default("REDIS_PORT", "6390")
redis_url := "redis://127.0.0.1:" + redis_port

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

# The deterministic fault-injection swarm: `just sim` (1000 seeds), `just sim SEED=42` (replay one).
sim SEED="" SEEDS="1000":
    if [ -n "{{SEED}}" ]; then \
        cargo run --release -- sim --seed {{SEED}}; \
    else \
        cargo run --release -- sim --seeds {{SEEDS}}; \
    fi

# Fuzz one target for SECS seconds: `just fuzz rendezvous_ops 60` (installs cargo-fuzz when missing).
fuzz TARGET SECS="60":
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    cd fuzz && cargo fuzz run -s none {{TARGET}} -- -max_total_time={{SECS}}

# Start a private redis-server on REDIS_PORT (default 6390), no persistence; installs it from apt if missing.
redis-up:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v redis-server >/dev/null; then
        SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
        $SUDO apt-get install -y redis-server || { $SUDO apt-get update && $SUDO apt-get install -y redis-server; }
    fi
    if redis-cli -p {{redis_port}} ping >/dev/null 2>&1; then echo "redis already up at {{redis_url}}"; exit 0; fi
    redis-server --port {{redis_port}} --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
        --pidfile /tmp/slimebench-redis-{{redis_port}}.pid --logfile /tmp/slimebench-redis-{{redis_port}}.log
    for _ in $(seq 50); do redis-cli -p {{redis_port}} ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis-cli -p {{redis_port}} ping >/dev/null
    echo "redis up at {{redis_url}} (stop with: just redis-down)"

# Stop the private redis-server.
redis-down:
    redis-cli -p {{redis_port}} shutdown nosave 2>/dev/null || true
    rm -f /tmp/slimebench-redis-{{redis_port}}.pid

# The sweep as two processes meeting through the private Redis.
bench-redis *ARGS: redis-up
    CTRL={{redis_url}} cargo run --release -- sweep --with-floor {{ARGS}}
