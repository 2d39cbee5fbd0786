"""Ray baseline for slimebench: a local EchoActor echoing raw bytes, timed call by call.

    python ray_echo.py --sizes 1024,4096 --warmup 20 [--iters N] --out ray_rpc.csv \
        [--temp-dir DIR] [--num-cpus 2]

Ray runs as an isolated local runtime (address="local", no dashboard, its own temp dir), never
attached to an ambient cluster. The slimebench runner also points HOME inside the run directory,
since Ray writes ~/.ray (auth token, usage-stats settings) there.

stdout: JSON lines (versions, per-size results, errors); stderr: the log. Exit codes: 0 ok,
1 failure, 2 usage error, 3 Ray not installed. See echo_common.py for the method.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import echo_common as ec  # noqa: E402

# Keep in step with RAY_VERSION in src/bench/baselines.rs.
RAY_VERSION = "2.60.0"

# AF_UNIX socket paths are limited to 107 bytes; Ray puts
# <temp>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store under the temp dir.
MAX_TEMP_DIR_LEN = 107 - len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")


def main(argv):
    parser = ec.make_parser("ray_echo.py", "Ray local-actor echo baseline for slimebench")
    parser.add_argument(
        "--temp-dir",
        default=None,
        help="Ray's temp dir (sessions, logs, sockets); default: ray-tmp beside --out. "
        f"Must be at most {MAX_TEMP_DIR_LEN} bytes long (AF_UNIX socket path limit)",
    )
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs Ray may schedule on (default 2)")
    args = parser.parse_args(argv)
    plan = ec.parse_plan(parser, args)
    if args.num_cpus <= 0:
        parser.error("--num-cpus must be positive")
    temp_dir = os.path.abspath(args.temp_dir or os.path.join(os.path.dirname(os.path.abspath(args.out)), "ray-tmp"))
    if len(temp_dir) > MAX_TEMP_DIR_LEN:
        parser.error(
            f"--temp-dir {temp_dir} is {len(temp_dir)} bytes; Ray's socket paths under it would pass "
            f"the 107-byte AF_UNIX limit: use a path of at most {MAX_TEMP_DIR_LEN} bytes (a symlink works)"
        )

    # No usage-stats prompt or upload: this is a measurement, not a user session.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as e:
        ec.log(
            f"error: cannot import ray ({e}) with {sys.executable}: install it with `just setup` "
            f"or `{sys.executable} -m pip install ray=={RAY_VERSION}`"
        )
        ec.emit("error", kind="not_installed", message=str(e))
        return ec.EXIT_NOT_INSTALLED

    ec.emit("versions", python=ec.python_version(), ray=ray.__version__, executable=sys.executable)
    if ray.__version__ != RAY_VERSION:
        ec.warning(f"ray {ray.__version__} is installed, slimebench pins {RAY_VERSION}")

    @ray.remote
    class EchoActor:
        def echo(self, payload: bytes) -> bytes:
            return payload

    os.makedirs(temp_dir, exist_ok=True)
    ec.log(f"starting an isolated local Ray runtime (temp dir {temp_dir}, num_cpus={args.num_cpus})")
    try:
        ray.init(
            address="local",
            include_dashboard=False,
            num_cpus=args.num_cpus,
            _temp_dir=temp_dir,
        )
        actor = EchoActor.remote()

        def call(payload):
            return ray.get(actor.echo.remote(payload))

        rows = ec.sweep(plan, call)
        ec.write_csv(args.out, rows)
        ec.emit("done", rows=len(rows), out=os.path.abspath(args.out))
        return ec.EXIT_OK
    finally:
        ray.shutdown()
        ec.log("ray.shutdown() done")
        ec.reap_run_processes()


if __name__ == "__main__":
    ec.exit_cleanly_on_sigterm()
    try:
        code = main(sys.argv[1:])
    except ec.BenchError as e:
        ec.log(f"error: {e}")
        ec.emit("error", kind="bench", message=str(e))
        code = ec.EXIT_FAILURE
    except SystemExit as e:
        if e.code in (0, ec.EXIT_USAGE):
            raise  # --help and usage errors from argparse
        ec.log(f"error: terminated (exit code {e.code})")
        ec.emit("error", kind="terminated", message=f"terminated (exit code {e.code})")
        code = e.code if isinstance(e.code, int) else ec.EXIT_FAILURE
    except KeyboardInterrupt:
        ec.log("error: interrupted")
        ec.emit("error", kind="interrupted", message="interrupted")
        code = ec.EXIT_FAILURE
    except Exception as e:  # noqa: BLE001 - report any framework failure as a clear exit 1
        import traceback

        traceback.print_exc()
        ec.emit("error", kind=type(e).__name__, message=str(e))
        code = ec.EXIT_FAILURE
    sys.exit(code)
