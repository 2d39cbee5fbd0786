"""Shared parts of the slimebench baseline scripts (ray_echo.py, pulsing_echo.py).

The Rust runner (src/bench/baselines.rs) writes this file beside the script it runs. Everything
here mirrors the harness's own method so the CSVs compare row for row:

- sizes, warm-up and the iteration formula of src/bench/plan.rs
  (iters = max(50, min(500, 50_000_000 // size)) unless given);
- statistics exactly as src/bench/stats.rs: avg = mean, p50 = sorted[n // 2],
  p99 = sorted[min(n * 99 // 100, n - 1)], bw_gbps = 2 * size / avg in decimal GB/s;
- the CSV header of src/bench/csv.rs: size,avg_us,p50_us,p99_us,bw_gbps.

Output protocol: stdout carries one JSON object per line (an "event" key each) for the runner;
stderr carries human-readable progress and errors (the runner keeps it as the run's log).

Exit codes: 0 success, 1 runtime failure, 2 usage error, 3 the framework is not installed.
"""

import argparse
import json
import os
import signal
import sys
import time

CSV_HEADER = "size,avg_us,p50_us,p99_us,bw_gbps"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_INSTALLED = 3

# Set by the slimebench runner on the script; every process the run starts inherits it.
TOKEN_VAR = "SLIMEBENCH_BASELINE_TOKEN"


class BenchError(Exception):
    """A runtime failure with a message meant for the user (exit code 1)."""


def iters_for(size):
    """Timed calls for one size, the original's formula (same as plan.rs `iters_for`)."""
    by_volume = 50_000_000 // size if size > 0 else 500
    return max(50, min(500, by_volume))


def _int_list(parser, flag, text):
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            parser.error(f"{flag}: empty entry in {text!r}")
        try:
            values.append(int(part))
        except ValueError:
            parser.error(f"{flag}: {part!r} is not a whole number")
    return values


def make_parser(prog, description):
    """The command line every baseline script shares; scripts may add their own flags."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--sizes",
        required=True,
        help="comma-separated payload sizes in bytes, e.g. 1024,4096,16384",
    )
    parser.add_argument(
        "--warmup",
        default="20",
        help="untimed calls per size: one number, or one per size (comma-separated); default 20",
    )
    parser.add_argument(
        "--iters",
        default=None,
        help="timed calls per size: one number, or one per size; default: "
        "max(50, min(500, 50000000 // size)) for each size",
    )
    parser.add_argument("--out", required=True, help="where to write the CSV")
    return parser


def parse_plan(parser, args):
    """Validated (size, warmup, iters) triples from the shared flags; usage errors exit 2."""
    sizes = _int_list(parser, "--sizes", args.sizes)
    if any(s <= 0 for s in sizes):
        parser.error("--sizes: every size must be positive")

    def per_size(flag, text, minimum):
        values = _int_list(parser, flag, text)
        if len(values) == 1:
            values = values * len(sizes)
        if len(values) != len(sizes):
            parser.error(f"{flag}: give one value or one per size ({len(sizes)}), not {len(values)}")
        if any(v < minimum for v in values):
            parser.error(f"{flag}: values must be at least {minimum}")
        return values

    warmups = per_size("--warmup", args.warmup, 0)
    if args.iters is None:
        iters = [iters_for(s) for s in sizes]
    else:
        iters = per_size("--iters", args.iters, 1)
    if not args.out.strip():
        parser.error("--out: empty path")
    return list(zip(sizes, warmups, iters))


def emit(event, **fields):
    """One JSON line on stdout for the runner."""
    fields = {"event": event, **fields}
    sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
    sys.stdout.flush()


def log(message):
    """One human-readable line on stderr (the run's log)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def workaround(name, active, detail):
    """Says, on stdout and in the log, which workaround is (or is not) in force and why."""
    state = "ACTIVE" if active else "OFF"
    log(f"workaround {name}: {state}: {detail}")
    emit("workaround", name=name, active=bool(active), detail=detail)


def warning(detail):
    log(f"warning: {detail}")
    emit("warning", detail=detail)


def payload_for(size):
    """A non-zero byte pattern (1..255 repeating) of `size` bytes.

    Zero pages could be special-cased somewhere (compression, sparse copies); a pattern cannot.
    """
    pattern = bytes(range(1, 256))
    reps = size // len(pattern) + 1
    return (pattern * reps)[:size]


def check_reply(size, payload, reply):
    """Raises BenchError unless `reply` equals `payload` byte for byte."""
    if not isinstance(reply, (bytes, bytearray, memoryview)):
        raise BenchError(f"size {size}: reply is a {type(reply).__name__}, not bytes")
    reply = bytes(reply)
    if reply == payload:
        return
    if len(reply) != len(payload):
        raise BenchError(f"size {size}: reply has {len(reply)} bytes, sent {len(payload)}")
    first = next(i for i in range(len(payload)) if payload[i] != reply[i])
    raise BenchError(f"size {size}: reply differs from the payload at byte {first}")


def stats_row(size, samples_ns):
    """The CSV row for one size, computed exactly as src/bench/stats.rs does."""
    n = len(samples_ns)
    if n == 0:
        raise BenchError(f"size {size}: no timed samples")
    sum_ns = sum(samples_ns)
    # Same arithmetic as Rust: the integer sum converted to float, then divided.
    avg_us = float(sum_ns) / float(n) / 1e3
    ordered = sorted(samples_ns)
    p50_us = ordered[n // 2] / 1e3
    p99_us = ordered[min(n * 99 // 100, n - 1)] / 1e3
    bw_gbps = 2.0 * size / (avg_us * 1e3) if avg_us > 0 else 0.0
    return {"size": size, "avg_us": avg_us, "p50_us": p50_us, "p99_us": p99_us, "bw_gbps": bw_gbps}


def write_csv(path, rows):
    """Writes the CSV atomically (temp file, then rename), creating the parent directory."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii", newline="\n") as f:
        f.write(CSV_HEADER + "\n")
        for r in rows:
            f.write(f"{r['size']},{r['avg_us']!r},{r['p50_us']!r},{r['p99_us']!r},{r['bw_gbps']!r}\n")
    os.replace(tmp, path)


def sweep(plan, call, before_size=None):
    """Runs the plan with a blocking `call(payload) -> reply`; returns the CSV rows.

    Per size: the first call's reply is checked against the payload, then the rest of the
    warm-up, then each timed call alone with time.perf_counter_ns().
    """
    rows = []
    for size, warmup, iters in plan:
        payload = payload_for(size)
        if before_size is not None:
            before_size(size)
        started = time.monotonic()
        check_reply(size, payload, call(payload))
        for _ in range(max(warmup - 1, 0)):
            call(payload)
        samples = []
        clock = time.perf_counter_ns
        for _ in range(iters):
            t0 = clock()
            call(payload)
            samples.append(clock() - t0)
        rows.append(report_size(size, samples, time.monotonic() - started))
    return rows


async def sweep_async(plan, call, before_size=None):
    """Like `sweep`, for an `async call(payload) -> reply` awaited one at a time."""
    rows = []
    for size, warmup, iters in plan:
        payload = payload_for(size)
        if before_size is not None:
            await before_size(size)
        started = time.monotonic()
        check_reply(size, payload, await call(payload))
        for _ in range(max(warmup - 1, 0)):
            await call(payload)
        samples = []
        clock = time.perf_counter_ns
        for _ in range(iters):
            t0 = clock()
            await call(payload)
            samples.append(clock() - t0)
        rows.append(report_size(size, samples, time.monotonic() - started))
    return rows


def report_size(size, samples, elapsed_s):
    row = stats_row(size, samples)
    log(
        f"size {size}: n={len(samples)} avg={row['avg_us']:.1f}us p50={row['p50_us']:.1f}us "
        f"p99={row['p99_us']:.1f}us bw={row['bw_gbps']:.3f}GB/s ({elapsed_s:.1f}s)"
    )
    emit("size", iters=len(samples), **row)
    return row


def python_version():
    return "%d.%d.%d" % sys.version_info[:3]


def exit_cleanly_on_sigterm():
    """Turns SIGTERM into SystemExit, so `finally` blocks (ray.shutdown()) run.

    The runner asks the kernel to send SIGTERM to this process if the runner dies, so a killed
    slimebench still gets the framework shut down.
    """

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def reap_run_processes():
    """Kills every other process of this run still alive (found by the runner's token in
    /proc/<pid>/environ); returns how many. Does nothing when not started by the runner.

    The runner does the same after the script exits; doing it here too covers a runner that
    died (then nobody else would), e.g. Ray's agents, which outlive a killed driver.
    """
    token = os.environ.get(TOKEN_VAR)
    if not token:
        return 0
    needle = f"{TOKEN_VAR}={token}".encode()
    me = os.getpid()
    killed = set()
    deadline = time.monotonic() + 5.0
    while True:
        alive = []
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        alive.append(int(name))
            except OSError:
                continue
        if not alive or time.monotonic() > deadline:
            break
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        time.sleep(0.05)
    if killed:
        log(f"killed {len(killed)} leftover process(es) of this run: {sorted(killed)}")
        emit("reaped", count=len(killed), pids=sorted(killed))
    return len(killed)
