# slimebench tasks. `just` itself: `pip install rust-just` (seconds) or `cargo install just`.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Pinned baseline versions (also in src/bench/baselines.rs).
ray_version := "2.60.0"
pulsing_version := "0.1.2"

# Port of the private Redis that `redis-up` starts (not the system's 6379).
redis_port := env_var_or_default("REDIS_PORT", "6390")
redis_url := "redis://127.0.0.1:" + redis_port

# List the recipes.
default:
    @just --list

# Install what the project needs: system packages (redis-server; cmake and
# libclang-dev to build the RDMA backend; the RDMA run-time libraries) and a
# .venv with the pinned Ray and Pulsing (~20 s, ~340 MB).
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    pkgs=(redis-server cmake libclang-dev libibverbs1 ibverbs-providers librdmacm1 python3-venv)
    missing=()
    for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
        $SUDO apt-get install -y "${missing[@]}" || { $SUDO apt-get update && $SUDO apt-get install -y "${missing[@]}"; }
    fi
    $SUDO service redis-server stop >/dev/null 2>&1 || true
    if ! .venv/bin/python -c 'import ray, pulsing' 2>/dev/null; then
        python3 -m venv .venv
        .venv/bin/python -m pip install --quiet ray=={{ray_version}} pulsing=={{pulsing_version}}
    fi
    .venv/bin/python -c 'import ray, pulsing; print("ray", ray.__version__, "/ pulsing", pulsing.__version__)'

# The full comparison: setup if needed, a private Redis, ours (driver and
# worker processes over Redis) and Ray side by side; more with flags, e.g.
# `just bench --with-pulsing --with-floor --with-actix --out-dir results/runs/…`.
bench *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    .venv/bin/python -c 'import ray, pulsing' 2>/dev/null || just setup
    just redis-up
    CTRL={{redis_url}} cargo run --release -- sweep --with-ray {{ARGS}}

# On an RDMA machine: the sweep over RDMA verbs with Ray beside it (device from
# /sys/class/infiniband unless RDMA_DEVICE is set; builds with --features rdma).
bench-rdma *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    dev="${RDMA_DEVICE:-$(ls /sys/class/infiniband 2>/dev/null | head -1 || true)}"
    if [ -z "$dev" ]; then
        echo "no RDMA device under /sys/class/infiniband; see: cargo run --features rdma -- doctor" >&2
        exit 1
    fi
    .venv/bin/python -c 'import ray' 2>/dev/null || just setup
    just redis-up
    CTRL={{redis_url}} cargo run --release --features rdma -- sweep --transport rdma --device "$dev" --with-ray {{ARGS}}

# The sweep alone, embedded (no Redis, no Python): what the README's quick start runs.
bench-local *ARGS:
    cargo run --release -- sweep --with-floor {{ARGS}}

# The test suite (what CI runs).
test:
    cargo test --workspace

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# The deterministic fault-injection swarm: `just sim` (1000 seeds), `just sim SEED=42` or `just sim 42` (replay one, with its log).
sim SEED="" SEEDS="1000":
    #!/usr/bin/env bash
    set -euo pipefail
    seed="{{SEED}}"; seed="${seed#SEED=}"
    if [ -n "$seed" ]; then
        cargo run --release -- sim --seed "$seed" --log
    else
        cargo run --release -- sim --seeds {{SEEDS}}
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
