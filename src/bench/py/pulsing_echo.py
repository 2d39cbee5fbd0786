"""Pulsing baseline for slimebench: an EchoActor in a separate process, timed call by call.

    python pulsing_echo.py --sizes 1024,4096 --warmup 20 [--iters N] --out pulsing_rpc.csv \
        [--nodelay on|off] [--ready-timeout 60]

This process (the caller) starts a second Python process (`--serve`, the actor's node), both
join one Pulsing cluster over loopback TCP, and each call goes caller -> actor -> caller through
Pulsing's transport: the fair comparison with an RPC between two processes. The actor process
reads its stdin and exits when it closes, so it never outlives the caller.

Known defects of Pulsing 0.1.2 and what this script does about them (each is announced on
stdout as a `workaround` event and in the log, with ACTIVE or OFF):

- tcp_nodelay: Pulsing's accepted TCP sockets keep Nagle's algorithm on, so replies of 16KB
  and up wait ~40 ms for a delayed ACK. The script sets TCP_NODELAY itself: it finds Pulsing's
  TCP sockets in /proc/self/fd of each process and calls setsockopt on a duplicate of each fd
  (same socket), first on the listening sockets before any peer connects (Linux copies the
  option to accepted sockets), then re-checks every TCP socket of both processes before each
  size. `--nodelay off` measures Pulsing as shipped, and then warns when it sees the stall.
- ask_direct: across processes the typed/untyped proxy (`ref.as_any().echo(x)`) fails, because
  the reply arrives as a Message whose payload is pickled and the proxy parses it as JSON. The
  script probes the proxy once; if it fails it calls `ref.ask` with Pulsing's own method-call
  envelope and unpickles the reply itself (what the proxy does in-process).
- os_exit: the interpreter aborts or segfaults at exit once Pulsing ran (finalization of its
  runtime threads), so both processes end with os._exit after `pulsing.shutdown()`, having
  flushed their output.

stdout: JSON lines; stderr: the log. Exit codes: 0 ok, 1 failure, 2 usage, 3 not installed.
"""

import asyncio
import json
import os
import pickle
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import echo_common as ec  # noqa: E402

# Keep in step with PULSING_VERSION in src/bench/baselines.rs.
PULSING_VERSION = "0.1.2"
ACTOR_NAME = "actors/slimebench_echo"
# A median above this at 16KB..256KB over loopback is a delayed-ACK stall, not transfer time
# (256KB takes ~1.5 ms here with TCP_NODELAY). Larger sizes are slow on their own (~0.25 GB/s),
# so the check stops at 256KB.
STALL_P50_US = 30_000.0
STALL_SIZES = (16 * 1024, 256 * 1024)


def not_installed(e):
    ec.log(
        f"error: cannot import pulsing ({e}) with {sys.executable}: install it with `just setup` "
        f"or `{sys.executable} -m pip install pulsing=={PULSING_VERSION}`"
    )
    ec.emit("error", kind="not_installed", message=str(e))
    return ec.EXIT_NOT_INSTALLED


def tcp_sockets_nodelay(set_missing):
    """Inspects (and with `set_missing`, fixes) TCP_NODELAY on every TCP socket of this process.

    Returns {"tcp": n, "had": n_with_nodelay, "set": [[local, peer], ...]}. Works on a duplicate
    of each fd: setsockopt on a dup changes the one underlying socket, and closing the dup
    leaves Pulsing's fd open.
    """
    total, had, changed = 0, 0, []
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = int(name)
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            dup = os.dup(fd)
        except (OSError, ValueError):
            continue  # closed meanwhile, or not ours to read
        try:
            s = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            continue
        with s:
            if s.family not in (socket.AF_INET, socket.AF_INET6) or s.type != socket.SOCK_STREAM:
                continue
            total += 1
            if s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY):
                had += 1
                continue
            if not set_missing:
                continue
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                peer = "%s:%d" % s.getpeername()[:2]
            except OSError:
                peer = "listening"
            changed.append(["%s:%d" % s.getsockname()[:2], peer])
    return {"tcp": total, "had": had, "set": changed}


def exit_now(code):
    """Flushes our output, then leaves without interpreter finalization (see os_exit above)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


# ---------------------------------------------------------------------------------------------
# The actor process.


async def serve(nodelay):
    import pulsing as pul

    @pul.remote
    class EchoActor:
        def echo(self, payload: bytes) -> bytes:
            return payload

        def tcp_nodelay(self):
            return tcp_sockets_nodelay(set_missing=nodelay)

        def pid(self):
            return os.getpid()

    system = await pul.init(addr="127.0.0.1:0")
    # Before any peer connects: accepted sockets inherit the listener's TCP_NODELAY on Linux.
    listener = tcp_sockets_nodelay(set_missing=nodelay)
    await EchoActor.spawn(name=ACTOR_NAME)
    ready = {"event": "ready", "addr": str(system.addr), "pid": os.getpid(), "nodelay": listener}
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    # Serve until the caller closes our stdin (it exited, or it is done).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
    await pul.shutdown()


def serve_main(argv):
    import argparse

    parser = argparse.ArgumentParser(prog="pulsing_echo.py --serve")
    parser.add_argument("--serve", action="store_true", required=True)
    parser.add_argument("--nodelay", choices=["on", "off"], default="on")
    args = parser.parse_args(argv)
    try:
        import pulsing  # noqa: F401
    except ImportError as e:
        exit_now(not_installed(e))
    try:
        asyncio.run(serve(args.nodelay == "on"))
        exit_now(ec.EXIT_OK)
    except BaseException as e:  # noqa: BLE001 - the caller reads our exit code and log
        ec.log(f"actor process error: {type(e).__name__}: {e}")
        exit_now(ec.EXIT_FAILURE)


# ---------------------------------------------------------------------------------------------
# The caller process.


def start_actor_process(nodelay, ready_timeout_s):
    """Starts the actor process; returns (Popen, ready dict) once it listens."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve", "--nodelay", nodelay],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,  # the actor's log goes where ours goes
    )
    box = {}

    def read_ready():
        box["line"] = proc.stdout.readline()

    reader = threading.Thread(target=read_ready, daemon=True)
    reader.start()
    reader.join(ready_timeout_s)
    line = box.get("line")
    if not line:
        code = proc.poll()
        stop_actor_process(proc)
        if code is None and reader.is_alive():
            raise ec.BenchError(f"the Pulsing actor process was not ready within {ready_timeout_s}s")
        if code == ec.EXIT_NOT_INSTALLED:
            raise ec.BenchError("the Pulsing actor process cannot import pulsing")
        raise ec.BenchError(f"the Pulsing actor process exited before it was ready (exit code {proc.poll()})")
    try:
        ready = json.loads(line)
    except ValueError:
        stop_actor_process(proc)
        raise ec.BenchError(f"the Pulsing actor process said {line!r} instead of its address")
    return proc, ready


def stop_actor_process(proc):
    """Closes the actor's stdin (it exits on EOF); kills it if it has not left after 10 s."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        ec.log("the Pulsing actor process did not exit on EOF: killing it")
        proc.kill()
        proc.wait()
    return proc.returncode


def call_envelope():
    """Pulsing's own method-call envelope and reply decoder (private API, copied if it moves)."""
    try:
        from pulsing.core.remote import _unwrap_response, _wrap_call
    except ImportError:

        def _wrap_call(method, args, kwargs, is_async):
            return {
                "__pulsing_proto__": "1",
                "__pulsing__": {"call": method, "async": is_async},
                "user_data": {"args": args, "kwargs": kwargs},
            }

        def _unwrap_response(resp):
            inner = resp.get("__pulsing__", {})
            return inner.get("result"), inner.get("error")

    return _wrap_call, _unwrap_response


async def run_caller(args, plan):
    import pulsing as pul

    ec.emit("versions", python=ec.python_version(), pulsing=pul.__version__, executable=sys.executable)
    if pul.__version__ != PULSING_VERSION:
        ec.warning(f"pulsing {pul.__version__} is installed, slimebench pins {PULSING_VERSION}")
    nodelay = args.nodelay == "on"
    if nodelay:
        ec.workaround(
            "tcp_nodelay",
            True,
            "TCP_NODELAY set from Python (setsockopt on a dup of each TCP fd in /proc/self/fd) on "
            "Pulsing's listening sockets in both processes before any connection (accepted sockets "
            "inherit it), every TCP socket re-checked before each size; Pulsing 0.1.2 leaves Nagle on "
            "for accepted sockets, which stalls replies of 16KB and up by ~40 ms (delayed ACK)",
        )
    else:
        ec.workaround(
            "tcp_nodelay",
            False,
            "--nodelay off: Pulsing's own socket settings; expect ~40 ms stalls from 16KB up, which "
            "measure Nagle + delayed ACK, not Pulsing's speed",
        )

    ec.workaround(
        "os_exit",
        True,
        "both processes end with os._exit after pulsing.shutdown(): Pulsing 0.1.2 aborts or "
        "segfaults in interpreter finalization",
    )

    proc, ready = start_actor_process(args.nodelay, args.ready_timeout)
    try:
        ec.log(f"actor process {ready['pid']} listens on {ready['addr']}; its sockets: {ready['nodelay']}")
        await pul.init(addr="127.0.0.1:0", seeds=[ready["addr"]])
        mine = tcp_sockets_nodelay(set_missing=nodelay)
        ec.log(f"caller process {os.getpid()} sockets: {mine}")
        ref = await pul.resolve(ACTOR_NAME, timeout=args.ready_timeout)
        if ref.is_local():
            raise ec.BenchError("the echo actor resolved to this process; the baseline needs two processes")
        wrap_call, unwrap_response = call_envelope()

        def decode(resp):
            # Across processes the reply is a Message carrying the pickled reply envelope.
            if isinstance(resp, pul.Message):
                if resp.msg_type:
                    raise ec.BenchError(f"unexpected reply message type {resp.msg_type!r}")
                resp = pickle.loads(resp.payload)
            if not isinstance(resp, dict):
                raise ec.BenchError(f"unexpected reply {type(resp).__name__}")
            result, error = unwrap_response(resp)
            if error:
                raise ec.BenchError(f"the echo actor failed: {error}")
            return result

        async def ask(method, *call_args):
            return decode(await ref.ask(wrap_call(method, call_args, {}, False)))

        probe = ec.payload_for(1024)
        proxy_error = None
        try:
            reply = await asyncio.wait_for(ref.as_any().echo(probe), timeout=30)
            ec.check_reply(1024, probe, reply)
        except Exception as e:  # noqa: BLE001 - any failure of the proxy path is the finding
            proxy_error = f"{type(e).__name__}: {e}"
        if proxy_error is None:
            ec.workaround("ask_direct", False, "the ActorProxy works across processes: calls use it")
            proxy = ref.as_any()

            async def call(payload):
                return await proxy.echo(payload)

        else:
            ec.workaround(
                "ask_direct",
                True,
                f"the ActorProxy fails across processes ({proxy_error}): calls go through ref.ask "
                "with Pulsing's method-call envelope and the pickled reply is decoded here",
            )

            async def call(payload):
                return decode(await ref.ask(wrap_call("echo", (payload,), {}, False)))

        actor_pid = await ask("pid")
        if actor_pid == os.getpid():
            raise ec.BenchError("the echo actor runs in this process; the baseline needs two processes")
        async def before_size(size):
            theirs = await ask("tcp_nodelay")
            mine = tcp_sockets_nodelay(set_missing=nodelay)
            fixed = len(theirs["set"]) + len(mine["set"])
            lacking = (theirs["tcp"] - theirs["had"]) + (mine["tcp"] - mine["had"])
            ec.emit("nodelay_check", size=size, actor=theirs, caller=mine)
            if nodelay and fixed:
                ec.log(f"size {size}: set TCP_NODELAY on {fixed} more socket(s): {theirs['set'] + mine['set']}")
            elif not nodelay and lacking:
                ec.log(f"size {size}: {lacking} TCP socket(s) without TCP_NODELAY (left as Pulsing set them)")

        rows = await ec.sweep_async(plan, call, before_size)
        stalled = [
            r for r in rows if STALL_SIZES[0] <= r["size"] <= STALL_SIZES[1] and r["p50_us"] >= STALL_P50_US
        ]
        if stalled:
            sizes = ",".join(str(r["size"]) for r in stalled)
            ec.warning(
                f"p50 >= {STALL_P50_US / 1000:.0f} ms at sizes {sizes}: that is the ~40 ms Nagle/delayed-ACK "
                "stall of Pulsing's sockets, not its transfer speed"
                + ("" if nodelay else " (run with --nodelay on to remove it)")
            )
        ec.write_csv(args.out, rows)
        ec.emit("done", rows=len(rows), out=os.path.abspath(args.out))
        return ec.EXIT_OK
    finally:
        try:
            await pul.shutdown()
        finally:
            code = stop_actor_process(proc)
            ec.log(f"actor process exited with code {code}")


def main(argv):
    parser = ec.make_parser("pulsing_echo.py", "Pulsing separate-process actor echo baseline for slimebench")
    parser.add_argument(
        "--nodelay",
        choices=["on", "off"],
        default="on",
        help="set TCP_NODELAY on Pulsing's sockets (default on; off measures Pulsing as shipped)",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the actor process and the name lookup (default 60)",
    )
    args = parser.parse_args(argv)
    plan = ec.parse_plan(parser, args)
    if args.ready_timeout <= 0:
        parser.error("--ready-timeout must be positive")
    try:
        import pulsing  # noqa: F401
    except ImportError as e:
        return not_installed(e)
    return asyncio.run(run_caller(args, plan))


if __name__ == "__main__":
    if "--serve" in sys.argv[1:]:
        serve_main(sys.argv[1:])
    ec.exit_cleanly_on_sigterm()
    try:
        code = main(sys.argv[1:])
    except SystemExit as e:  # argparse usage errors (2), --help (0), SIGTERM (143)
        code = e.code if isinstance(e.code, int) else ec.EXIT_USAGE
        if code not in (0, ec.EXIT_USAGE):
            ec.log(f"error: terminated (exit code {code})")
            ec.emit("error", kind="terminated", message=f"terminated (exit code {code})")
    except ec.BenchError as e:
        ec.log(f"error: {e}")
        ec.emit("error", kind="bench", message=str(e))
        code = ec.EXIT_FAILURE
    except KeyboardInterrupt:
        ec.log("error: interrupted")
        ec.emit("error", kind="interrupted", message="interrupted")
        code = ec.EXIT_FAILURE
    except Exception as e:  # noqa: BLE001 - report any framework failure as a clear exit 1
        import traceback

        traceback.print_exc()
        ec.emit("error", kind=type(e).__name__, message=str(e))
        code = ec.EXIT_FAILURE
    ec.reap_run_processes()
    exit_now(code)
