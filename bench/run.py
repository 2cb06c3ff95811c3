"""`make bench`: the same load direct to a fake upstream and through the gateway, ledger checked.

    make bench                                  # or: uv run --frozen python bench/run.py
    BENCH_QUICK=1 make bench                    # 3 s runs, 100 streams only: a quick look
    BENCH_BACKENDS=sqlite make bench            # one backend only (sqlite, pg)

What one run does, with nothing but 127.0.0.1 ever loaded:

1. starts `bench/mock_upstream.js` (Node, no packages), a fake OpenAI-compatible upstream, and
   measures it directly: wrk at 1, 16 and 64 connections (`bench/wrk_post.lua`), then 100 and
   1,000 concurrent streams of 20 chunks 50 ms apart (`bench/stream_load.js`);
2. for each backend, SQLite with the local-memory cache, then PostgreSQL + Redis when they
   answer on 127.0.0.1:5432 (user postgres, database llm_bench) and 127.0.0.1:6379 (db 14):
   a fresh database in a temporary DATA_DIR, `migrate`, a user with an API key and credits
   (`createapikey`, `grantcredits`), the production server (`manage.py serve`: granian WSGI,
   SERVER_THREADS threads, DEBUG=False) with the `openai` provider pointing at the mock, and
   the same runs through it (after a short warm-up), with full metering;
3. meters the gateway's process tree in every run (peak RSS sampled every 0.1 s, CPU time
   from /proc; also the CPU of PostgreSQL and Redis, of the mock, of the load generator and of
   whatever else ran on the machine meanwhile), and after every run checks the ledger through
   `manage.py shell`: once no hold is open, each call that reached the upstream was charged
   exactly once at the price (1 credit per request by default), the balance equals the sum of
   the entries, and the charged calls lie between the client's 2xx count and that plus the
   requests the client cut off (wrk drops its open connections when its time is up; the
   gateway still answers, and charges, those);
4. prints a markdown table (direct, gateway on SQLite, gateway on PostgreSQL + Redis) with the
   machine it ran on, and writes it to bench/results/latest.md (quick runs: quick.md) with the
   raw figures beside it (.json).

It exits 1 when a ledger check fails or a backend could not be measured (the report is written
all the same), 2 when it could not run at all. Every process it starts is stopped when it ends,
on Ctrl-C and on SIGTERM as well. wrk is installed with apt-get when missing; Node.js 18 or later
must be on the PATH.

    BENCH_GATEWAY_COMMIT=50e51ab make bench     # the gateway as of an older commit, same bench
    BENCH_COMPARE=c2e44fd make bench            # and that commit too, in the same run: a
                                                # column of its own after each backend
    uv run --frozen python bench/run.py --render bench/results/latest.json   # the report again

Knobs (environment, or the flags of `--help`): BENCH_QUICK, BENCH_BACKENDS, BENCH_DURATION (s per
wrk run, 10), BENCH_WARMUP (s, 2), BENCH_CONNECTIONS (1,16,64), BENCH_STREAMS (100,1000),
BENCH_STREAM_TIMEOUT (s per stream, 60), BENCH_CHUNKS (20), BENCH_CHUNK_MS (50), BENCH_PG_URL,
BENCH_REDIS_URL, BENCH_SETTLE_SECONDS (30), BENCH_OUTPUT, BENCH_GATEWAY_COMMIT, BENCH_COMPARE,
BENCH_KEEP (keep the temporary folder with the servers' logs). SERVER_THREADS, DATABASE_POOL_MAX
and the like pass through to the gateway.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BENCH_DIR = Path(__file__).resolve().parent
BASE_DIR = BENCH_DIR.parent
PYTHON = sys.executable
HOST = "127.0.0.1"
BENCH_USER = "bench"
GRANT_CREDITS = 10_000_000  # far more than any run can spend at 1 credit per request
PRICE_MICRO = 1_000_000  # the default price: 1 credit per request
UPSTREAM_MODEL = "gpt-4o-mini"
BACKEND_NAMES = {"sqlite": "gateway, SQLite", "pg": "gateway, PostgreSQL + Redis"}
# Variables of the invoking shell that must not reach the gateway: ours replace them.
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY")
GATEWAY_OVERRIDDEN = ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", *PROXY_VARIABLES)


class BenchError(Exception):
    """A step that could not be done; the message says which and why."""


# --- configuration -------------------------------------------------------------------------------


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "") or default


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.replace(" ", "").split(",") if part]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    quick = _env("BENCH_QUICK", "0").lower() not in {"0", "false", "no", ""}
    parser = argparse.ArgumentParser(
        description="The gateway against its fake upstream: direct, then through it.",
        epilog="Each flag defaults to its BENCH_* variable (see the module docstring).",
    )
    parser.add_argument("--quick", action="store_true", default=quick, help="BENCH_QUICK")
    parser.add_argument("--backends", default=_env("BENCH_BACKENDS", "sqlite,pg"))
    parser.add_argument("--duration", type=float, default=None, help="s per wrk run (10)")
    parser.add_argument("--warmup", type=float, default=None, help="s of warm-up (2)")
    parser.add_argument("--connections", default=_env("BENCH_CONNECTIONS", "1,16,64"))
    parser.add_argument("--streams", default=None, help="concurrent streams per run (100,1000)")
    parser.add_argument(
        "--stream-timeout", type=float, default=float(_env("BENCH_STREAM_TIMEOUT", "60"))
    )
    parser.add_argument("--chunks", type=int, default=int(_env("BENCH_CHUNKS", "20")))
    parser.add_argument("--chunk-ms", type=float, default=float(_env("BENCH_CHUNK_MS", "50")))
    parser.add_argument(
        "--pg-url", default=_env("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/llm_bench")
    )
    parser.add_argument("--redis-url", default=_env("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    parser.add_argument("--settle", type=float, default=float(_env("BENCH_SETTLE_SECONDS", "30")))
    parser.add_argument("--output", default=_env("BENCH_OUTPUT", ""))
    parser.add_argument(
        "--render",
        metavar="JSON",
        default="",
        help="only print the report of an earlier run from its .json (and write it to --output)",
    )
    parser.add_argument(
        "--gateway-commit",
        default=_env("BENCH_GATEWAY_COMMIT", ""),
        help="measure the gateway as of this commit (exported with git archive), not the work "
        "tree; the bench itself and the installed dependencies stay the current ones",
    )
    parser.add_argument(
        "--compare",
        default=_env("BENCH_COMPARE", ""),
        help="also measure the gateway as of this commit, backend by backend right after the "
        "work tree (or --gateway-commit), in the same run: a column of its own per backend",
    )
    parser.add_argument(
        "--keep", action="store_true", default=_env("BENCH_KEEP", "0") not in {"0", ""}
    )
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = float(_env("BENCH_DURATION", "3" if args.quick else "10"))
    if args.warmup is None:
        args.warmup = float(_env("BENCH_WARMUP", "1" if args.quick else "2"))
    if args.streams is None:
        args.streams = _env("BENCH_STREAMS", "100" if args.quick else "100,1000")
    args.connections = _ints(args.connections)
    args.streams = _ints(args.streams)
    args.backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = set(args.backends) - set(BACKEND_NAMES)
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(sorted(unknown))}: use sqlite, pg")
    if not args.output and not args.render:
        args.output = str(BENCH_DIR / "results" / ("quick.md" if args.quick else "latest.md"))
    for url in (args.pg_url, args.redis_url):
        if urlsplit(url).hostname not in {"127.0.0.1", "localhost", "::1"}:
            parser.error(f"{url}: the benchmark only talks to 127.0.0.1")
    return args


# --- processes -----------------------------------------------------------------------------------


class Processes:
    """Every process the run starts, each in a process group of its own, stopped at the end."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen] = []

    def start(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        log: Path | None = None,
        stdout: Any = None,
        cwd: Path = BASE_DIR,
    ) -> subprocess.Popen:
        out = open(log, "ab") if log else stdout  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if log else subprocess.PIPE,
            start_new_session=True,
        )
        if log:
            out.close()  # the child has its own copy
        self.running.append(process)
        return process

    def run(
        self, argv: list[str], *, env: dict[str, str], timeout: float, cwd: Path = BASE_DIR
    ) -> subprocess.CompletedProcess:
        """Run a command to its end (killed after `timeout` s); return its output."""
        process = self.start(argv, env=env, stdout=subprocess.PIPE, cwd=cwd)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(process)
            raise BenchError(
                f"{' '.join(argv[:3])}… took over {timeout:.0f} s and was stopped"
            ) from None
        except BaseException:  # Ctrl-C, SIGTERM: stop it now, on the way out
            self.stop(process)
            raise
        self.forget(process)
        return subprocess.CompletedProcess(
            argv,
            process.returncode,
            stdout.decode(errors="replace"),
            stderr.decode(errors="replace"),
        )

    def forget(self, process: subprocess.Popen) -> None:
        with contextlib.suppress(ValueError):
            self.running.remove(process)

    def stop(self, process: subprocess.Popen, timeout: float = 15.0) -> None:
        """SIGTERM the process's group, SIGKILL it after `timeout` s."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        # Children that outlived their leader (a granian worker) are in the same group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        self.forget(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.running)):
            self.stop(process)


def _raise_signal(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def raise_open_files_limit() -> int:
    """Lift the soft open-files limit to the hard one (the children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        return wanted
    return soft


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def http_request(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """One request to 127.0.0.1:`port` (no proxy, whatever the environment says)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_until_ready(
    port: int, path: str, process: subprocess.Popen, log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(
                f"the process serving port {port} exited ({process.returncode}):\n{tail(log)}"
            )
        try:
            status, body = http_request(port, "GET", path, timeout=2)
            if status == 200:
                return
            last = f"{status} {body[:200]!r}"
        except OSError as error:
            last = str(error)
        time.sleep(0.2)
    raise BenchError(
        f"GET {path} on port {port} not 200 after {timeout:.0f} s ({last}):\n{tail(log)}"
    )


# --- metering the gateway's processes ------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on


def process_tree(root: int) -> list[int]:
    """`root` and every descendant of it, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields:
                parents[int(entry)] = int(fields[1])
    tree, frontier = [root], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        tree.extend(children)
        frontier = children
    return [pid for pid in tree if pid in parents]


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of `pids` (and of their reaped children), in seconds."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            ticks += sum(int(value) for value in fields[11:15])
    return ticks / CLOCK_TICKS


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
    return total


def machine_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (every core, every process), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def rusage_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rusage_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def processes_named(names: set[str]) -> list[int]:
    """Every process whose command name is one of `names` (to meter, never to signal)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/comm").read_text().strip() in names:
                    found.append(int(entry))
    return found


class Meter:
    """CPU time and peak RSS of some processes between `start()` and `stop()`: a process tree
    (`root`), or whatever `find()` returns."""

    def __init__(self, root: int | None = None, find: Any = None) -> None:
        self.find = find or ((lambda: process_tree(root)) if root is not None else None)
        self.peak_kb = 0
        self.cpu0 = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pids: list[int] = []

    def start(self) -> Meter:
        if self.find is None:
            return self
        self._pids = self.find()
        self.cpu0 = cpu_seconds(self._pids)
        self.peak_kb = rss_kb(self._pids)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        rescan = time.monotonic() + 1
        while not self._stop.wait(0.1):
            if time.monotonic() > rescan:
                self._pids = self.find()
                rescan = time.monotonic() + 1
            self.peak_kb = max(self.peak_kb, rss_kb(self._pids))

    def stop(self) -> dict[str, float] | None:
        if self.find is None or self._thread is None:
            return None
        self._stop.set()
        self._thread.join()
        pids = self.find()
        self.peak_kb = max(self.peak_kb, rss_kb(pids))
        return {
            "cpu_s": round(cpu_seconds(pids) - self.cpu0, 2),
            "peak_rss_mb": round(self.peak_kb / 1024, 1),
            "processes": len(pids),
        }


# --- the load ------------------------------------------------------------------------------------


@dataclass
class Target:
    """Where the load goes: the mock itself, or a gateway in front of it."""

    name: str
    port: int
    model: str
    api_key: str = ""
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/v1/chat/completions"


@dataclass
class Bench:
    args: argparse.Namespace
    procs: Processes
    workdir: Path
    mock_port: int = 0
    mock_process: subprocess.Popen | None = None
    wrk: str = "wrk"
    calls_mark: int = 0  # the upstream's call count at the last ledger check
    gateway_dir: Path = BASE_DIR  # the gateway's source: this work tree, or an exported commit
    results: dict[str, Any] = field(default_factory=dict)

    # --- tools ---

    def run_wrk(self, target: Target, connections: int, duration: float) -> dict[str, Any]:
        body = json.dumps(
            {
                "model": target.model,
                "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 64,
            }
        )
        threads = 1 if connections == 1 else min(2, connections)
        argv = [
            *(self.wrk, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s"),
            *("--timeout", "60s", "-s", str(BENCH_DIR / "wrk_post.lua"), target.url),
        ]
        env = {**os.environ, "BENCH_BODY": body, "BENCH_API_KEY": target.api_key}
        done = self.procs.run(argv, env=env, timeout=duration + 90)
        line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
        if line is None:
            raise BenchError(f"wrk printed no result ({done.returncode}): {done.stderr[-500:]}")
        raw = json.loads(line.split(" ", 1)[1])
        seconds = raw["duration_us"] / 1e6 or duration
        socket_errors = sum(
            raw[name] for name in ("connect_errors", "read_errors", "write_errors", "timeouts")
        )
        return {
            "connections": connections,
            "requests": raw["requests"],
            "ok": raw["requests"] - raw["status_errors"],
            "status_errors": raw["status_errors"],
            "socket_errors": socket_errors,
            "rps": raw["requests"] / seconds,
            "ok_rps": (raw["requests"] - raw["status_errors"]) / seconds,
            "p50_ms": raw["latency_us"]["p50"] / 1000,
            "p90_ms": raw["latency_us"]["p90"] / 1000,
            "p99_ms": raw["latency_us"]["p99"] / 1000,
            "max_ms": raw["latency_us"]["max"] / 1000,
            "raw": raw,
        }

    def run_streams(self, target: Target, streams: int) -> dict[str, Any]:
        argv = [
            *("node", str(BENCH_DIR / "stream_load.js"), "--url", target.url),
            *("--streams", str(streams), "--model", target.model),
            *("--chunks", str(self.args.chunks)),
            *("--timeout-ms", str(int(self.args.stream_timeout * 1000))),
        ]
        if target.api_key:
            argv += ["--key", target.api_key]
        done = self.procs.run(argv, env=dict(os.environ), timeout=self.args.stream_timeout + 120)
        try:
            return json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise BenchError(
                f"the stream loader printed no result ({done.returncode}): {done.stderr[-800:]}"
            ) from None

    def mock_stats(self) -> dict[str, int]:
        status, body = http_request(self.mock_port, "GET", "/stats")
        if status != 200:
            raise BenchError(f"the mock's /stats answered {status}")
        return json.loads(body)

    def upstream_calls(self) -> int:
        stats = self.mock_stats()
        return stats["chat"] + stats["streams_started"]

    def quiesce(self, quiet: float = 1.5) -> None:
        """Wait until the upstream has seen no new call for `quiet` s (at most --settle s): the
        requests a client gave up on may still be queued in the gateway, and reach it later."""
        deadline = time.monotonic() + self.args.settle
        calls, since = self.upstream_calls(), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet:
            time.sleep(0.25)
            now = self.upstream_calls()
            if now != calls:
                calls, since = now, time.monotonic()

    def measured(self, target: Target, label: str, load: Any) -> tuple[Any, dict[str, Any]]:
        """Run `load()` with the target's and the mock's processes metered."""
        gateway = Meter(target.process.pid if target.process else None).start()
        mock = Meter(self.mock_process.pid if self.mock_process else None).start()
        # PostgreSQL and Redis serve the gateway on pg: metered by name, whoever started them.
        servers = {"postgres", "redis-server"}
        database = Meter(find=lambda: processes_named(servers)) if target.name == "pg" else Meter()
        database.start()
        started = time.monotonic()
        machine0, children0, self0 = machine_cpu_seconds(), rusage_children(), rusage_self()
        try:
            result = load()
        finally:
            usage = {"gateway": gateway.stop(), "mock": mock.stop(), "database": database.stop()}
        wall = time.monotonic() - started
        usage["wall_s"] = round(wall, 1)
        # Whatever else ran on the machine meanwhile (another user's work) shows up here.
        busy = machine_cpu_seconds() - machine0
        loadgen = rusage_children() - children0
        ours = loadgen + rusage_self() - self0
        ours += sum((usage[name] or {}).get("cpu_s", 0) for name in ("gateway", "mock", "database"))
        usage["loadgen_cpu_s"] = round(loadgen, 2)
        usage["machine_cpu_s"] = round(busy, 2)
        usage["others_cpu_s"] = round(max(0.0, busy - ours), 2)
        usage["capacity_cpu_s"] = round(wall * len(os.sched_getaffinity(0)), 2)
        print(f"  {label}: {summarize(result)}", flush=True)
        return result, usage

    # --- the mock ---

    def start_mock(self) -> None:
        self.mock_port = free_port()
        log = self.workdir / "mock.log"
        env = {
            **os.environ,
            "MOCK_HOST": HOST,
            "MOCK_PORT": str(self.mock_port),
            "MOCK_CHUNKS": str(self.args.chunks),
            "MOCK_CHUNK_INTERVAL_MS": f"{self.args.chunk_ms:g}",
            "MOCK_MODEL": UPSTREAM_MODEL,
        }
        argv = ["node", str(BENCH_DIR / "mock_upstream.js")]
        self.mock_process = self.procs.start(argv, env=env, log=log)
        wait_until_ready(self.mock_port, "/v1/models", self.mock_process, log, timeout=20)

    def run_direct(self) -> dict[str, Any]:
        target = Target("direct", self.mock_port, UPSTREAM_MODEL)
        print(f"== direct to the mock upstream (port {self.mock_port})", flush=True)
        out: dict[str, Any] = {"wrk": {}, "streams": {}, "usage": {}}
        for connections in self.args.connections:
            result, usage = self.measured(
                target,
                f"wrk {connections} connection(s)",
                lambda c=connections: self.run_wrk(target, c, self.args.duration),
            )
            out["wrk"][connections] = result
            out["usage"][f"c{connections}"] = usage
        for streams in self.args.streams:
            result, usage = self.measured(
                target, f"{streams} streams", lambda n=streams: self.run_streams(target, n)
            )
            out["streams"][streams] = result
            out["usage"][f"s{streams}"] = usage
        return out

    # --- a gateway ---

    def gateway_env(self, backend: str, data_dir: Path, port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in GATEWAY_OVERRIDDEN}
        mock_url = f"http://{HOST}:{self.mock_port}/v1"
        env.update(
            {
                "DEBUG": "False",
                "SECRET_KEY": secrets.token_urlsafe(50),
                "API_KEY_SECRET": secrets.token_urlsafe(32),
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "DATA_DIR": str(data_dir),
                "DATABASE_URL": f"sqlite:///{data_dir / 'db.sqlite3'}",
                "CACHE_KEY_PREFIX": f"bench-{secrets.token_hex(4)}",
                "OPENAI_API_KEY": "sk-bench",
                "OPENAI_BASE_URL": mock_url,
                "INHOUSE_BASE_URL": mock_url,
                "INHOUSE_API_KEY": "sk-bench",
                "OLLAMA_HOST": f"http://{HOST}:9",  # never asked: nothing here uses it
                "GEMINI_API_KEY": "",
                "HOST": HOST,
                "PORT": str(port),
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if backend == "pg":
            env["DATABASE_URL"] = self.args.pg_url
            env["REDIS_URL"] = self.args.redis_url
        return env

    def manage(self, env: dict[str, str], *args: str, timeout: float = 300) -> str:
        done = self.procs.run(
            [PYTHON, "manage.py", *args], env=env, timeout=timeout, cwd=self.gateway_dir
        )
        if done.returncode != 0:
            raise BenchError(
                f"manage.py {args[0]} failed ({done.returncode}):\n"
                f"{done.stdout[-1500:]}{done.stderr[-1500:]}"
            )
        return done.stdout

    def ledger(self, env: dict[str, str]) -> dict[str, Any]:
        check_env = {
            **env,
            "BENCH_USER": BENCH_USER,
            "BENCH_SETTLE_SECONDS": f"{self.args.settle:g}",
            "BENCH_PRICE_MICRO": str(PRICE_MICRO),
        }
        out = self.manage(check_env, "shell", "-c", LEDGER_CHECK, timeout=self.args.settle + 120)
        line = next((x for x in out.splitlines() if x.startswith("BENCH_LEDGER ")), None)
        if line is None:
            raise BenchError(f"the ledger check printed nothing: {out[-500:]}")
        return json.loads(line.split(" ", 1)[1])

    def run_gateway(self, backend: str) -> dict[str, Any]:
        source = "" if self.gateway_dir == BASE_DIR else f" ({self.gateway_dir.name})"
        print(f"== {BACKEND_NAMES[backend]}{source}", flush=True)
        data_dir = Path(tempfile.mkdtemp(prefix=f"gateway-{backend}-", dir=self.workdir))
        port = free_port()
        env = self.gateway_env(backend, data_dir, port)
        if backend == "pg":
            reset_postgres(self.args.pg_url)
            reset_redis(self.args.redis_url)
        started = time.monotonic()
        self.manage(env, "migrate", "--no-input")
        key = self.manage(env, "createapikey", BENCH_USER, "--create-user", "--name", "bench")
        key = key.strip().splitlines()[-1].strip()
        self.manage(env, "grantcredits", BENCH_USER, str(GRANT_CREDITS), "--note", "make bench")
        baseline = self.ledger(env)
        setup_s = time.monotonic() - started
        log = data_dir / "gateway.log"
        process = self.procs.start(
            [PYTHON, "manage.py", "serve"], env=env, log=log, cwd=self.gateway_dir
        )
        target = Target(backend, port, f"openai/{UPSTREAM_MODEL}", key, process)
        out: dict[str, Any] = {"wrk": {}, "streams": {}, "usage": {}, "ledger": []}
        try:
            wait_until_ready(port, "/health", process, log, timeout=120)
            out["setup_s"] = round(setup_s, 1)
            out["start_s"] = round(time.monotonic() - started - setup_s, 1)
            print(f"  ready on port {port} (setup {setup_s:.1f} s)", flush=True)
            self.calls_mark = self.upstream_calls()
            smoke_ok = self.smoke(target, log)
            # Warm up (threads, connections, caches) and check the ledger once already.
            warm = self.run_wrk(target, 16, self.args.warmup)
            snapshot = self.check(
                "warm-up",
                env,
                baseline,
                client_ok=warm["ok"] + smoke_ok,
                cut_off=16 + warm["socket_errors"],
                out=out,
            )
            for connections in self.args.connections:
                result, usage = self.measured(
                    target,
                    f"wrk {connections} connection(s)",
                    lambda c=connections: self.run_wrk(target, c, self.args.duration),
                )
                out["wrk"][connections] = result
                out["usage"][f"c{connections}"] = usage
                snapshot = self.check(
                    f"{connections} connection(s)",
                    env,
                    snapshot,
                    client_ok=result["ok"],
                    cut_off=connections + result["socket_errors"],
                    out=out,
                )
            for streams in self.args.streams:
                result, usage = self.measured(
                    target, f"{streams} streams", lambda n=streams: self.run_streams(target, n)
                )
                out["streams"][streams] = result
                out["usage"][f"s{streams}"] = usage
                no_status = result["statuses"].get("0", 0)
                snapshot = self.check(
                    f"{streams} streams",
                    env,
                    snapshot,
                    client_ok=result["http_200"],
                    cut_off=no_status + result["errors"]["timeout"],
                    out=out,
                )
        finally:
            self.procs.stop(process)
            if process.returncode not in (0, -signal.SIGTERM, None):
                out["exit"] = process.returncode
            out["server_errors"] = logged_errors(log)
        return out

    def smoke(self, target: Target, log: Path) -> int:
        """One plain request and one stream through the gateway, so a broken setup fails fast."""
        headers = {"Content-Type": "application/json", "X-API-Key": target.api_key}
        ok = 0
        for stream in (False, True):
            body = {
                "model": target.model,
                "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 16,
                "stream": stream,
            }
            status, answer = http_request(
                target.port,
                "POST",
                "/v1/chat/completions",
                body=json.dumps(body).encode(),
                headers=headers,
                timeout=30,
            )
            if status != 200 or (stream and b"[DONE]" not in answer):
                raise BenchError(
                    f"a {'streamed' if stream else 'plain'} request through the gateway failed: "
                    f"{status} {answer[:400]!r}\n{tail(log, 10)}"
                )
            ok += 1
        return ok

    def check(
        self,
        phase: str,
        env: dict[str, str],
        before: dict[str, Any],
        *,
        client_ok: int,
        cut_off: int,
        out: dict[str, Any],
        upstream: int | None = None,
    ) -> dict[str, Any]:
        """Check the ledger after one run; record the verdict and return the new snapshot.

        Once the upstream is quiet and no hold is open, every request of the run has ended: the
        calls the upstream saw since the last check are this run's (or `upstream`, counted by a
        caller whose gateways shared the upstream meanwhile).
        """
        self.quiesce()
        after = self.ledger(env)
        previous, self.calls_mark = self.calls_mark, self.upstream_calls()
        if upstream is None:
            upstream = self.calls_mark - previous
        charged = after["usage_count"] - before["usage_count"]
        charged_micro = -(after["usage_sum"] - before["usage_sum"])
        problems = []
        if after["holds"].get("held", 0):
            problems.append(f"{after['holds']['held']} hold(s) still open")
        if after["balance"] != after["entries_sum"]:
            problems.append(f"balance {after['balance']} ≠ Σ entries {after['entries_sum']}")
        if after["held"] != 0:
            problems.append(f"the account still has {after['held']} µcr held")
        if charged_micro != charged * PRICE_MICRO or after["usage_off_price"]:
            problems.append(
                f"charged {charged_micro} µcr for {charged} calls (not {PRICE_MICRO} each)"
            )
        if charged != upstream:
            problems.append(f"{charged} charged ≠ {upstream} calls that reached the upstream")
        if not client_ok <= charged <= client_ok + cut_off:
            problems.append(
                f"{charged} charged, the client saw {client_ok} 2xx (+ up to {cut_off} cut off)"
            )
        if after["holds"].get("expired", 0) > before["holds"].get("expired", 0):
            problems.append("holds expired (a request never settled)")
        verdict = {
            "phase": phase,
            "client_2xx": client_ok,
            "charged": charged,
            "charged_credits": charged_micro / PRICE_MICRO,
            "upstream_calls": upstream,
            "cut_off_allowance": cut_off,
            "open_holds": after["holds"].get("held", 0),
            "balance_ok": after["balance"] == after["entries_sum"],
            "settle_wait_s": after["waited_s"],
            "pass": not problems,
            "problems": problems,
        }
        out["ledger"].append(verdict)
        mark = "PASS" if not problems else "FAIL: " + "; ".join(problems)
        print(
            f"    ledger after {phase}: {charged} charged, {client_ok} 2xx seen"
            f", {upstream} upstream calls, {verdict['open_holds']} open holds → {mark}",
            flush=True,
        )
        return after


EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Timeout|Exit|Interrupt))\b")


def logged_errors(log: Path) -> dict[str, int]:
    """The exceptions the gateway logged (the last line of each traceback), by class."""
    counts: dict[str, int] = {}
    in_traceback = False
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("Traceback (most recent call last)"):
                in_traceback = True
            elif in_traceback and (match := EXCEPTION_LINE.match(line)):
                counts[match.group(1)] = counts.get(match.group(1), 0) + 1
                in_traceback = False
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


# Runs inside `manage.py shell -c` with the gateway's environment: waits (up to
# BENCH_SETTLE_SECONDS) until the bench user has no open hold, then prints the ledger's state.
LEDGER_CHECK = """
import json, os, time
from django.contrib.auth import get_user_model
from django.db.models import Count, Sum
from billing.models import CreditAccount, CreditHold, LedgerEntry

user = get_user_model().objects.get(username=os.environ["BENCH_USER"])
started = time.monotonic()
deadline = started + float(os.environ["BENCH_SETTLE_SECONDS"])
open_holds = CreditHold.objects.filter(account_id=user.pk, status="held")
while open_holds.exists() and time.monotonic() < deadline:
    time.sleep(0.5)
account = CreditAccount.objects.get(user=user)
entries = LedgerEntry.objects.filter(account=account)
usage = entries.filter(kind="usage")
totals = usage.aggregate(n=Count("id"), total=Sum("amount"))
price = int(os.environ["BENCH_PRICE_MICRO"])
holds = CreditHold.objects.filter(account=account).order_by().values_list("status")
print("BENCH_LEDGER " + json.dumps({
    "balance": account.balance,
    "held": account.held,
    "entries_sum": entries.aggregate(total=Sum("amount"))["total"] or 0,
    "usage_count": totals["n"],
    "usage_sum": totals["total"] or 0,
    "usage_off_price": usage.exclude(amount=-price).count(),
    "holds": dict(holds.annotate(n=Count("id"))),
    "waited_s": round(time.monotonic() - started, 1),
}))
"""


# --- PostgreSQL and Redis ------------------------------------------------------------------------


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def _maintenance(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/postgres")), parts.path.lstrip("/")


def postgres_problem(pg_url: str, redis_url: str) -> str | None:
    """Why PostgreSQL + Redis can't be measured, or None when both answer."""
    if not _reachable(pg_url, 5432):
        return f"PostgreSQL not reachable at {urlsplit(pg_url).netloc}"
    if not _reachable(redis_url, 6379):
        return f"Redis not reachable at {urlsplit(redis_url).netloc}"
    try:
        import psycopg
        import redis

        with psycopg.connect(_maintenance(pg_url)[0], connect_timeout=5) as connection:
            connection.execute("SELECT 1")
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except Exception as error:  # any failure means: not this backend
        return f"PostgreSQL/Redis not usable: {error}"
    return None


def reset_postgres(pg_url: str, *, create: bool = True) -> None:
    """Drop the benchmark's database (and create it anew, empty)."""
    import psycopg
    from psycopg import sql

    maintenance, name = _maintenance(pg_url)
    with psycopg.connect(maintenance, autocommit=True, connect_timeout=10) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        if create:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def reset_redis(redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url, socket_connect_timeout=3).flushdb()


# --- the machine and the report ------------------------------------------------------------------


def _command_output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, cwd=BASE_DIR, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout or done.stderr).strip()


def machine(gateway_commit: str = "", compare: str = "") -> dict[str, Any]:
    cpu_model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_gb = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = int(line.split()[1]) / 1024 / 1024
    commit = _command_output(["git", "rev-parse", "--short", "HEAD"]) or "unknown"
    dirty = bool(_command_output(["git", "status", "--porcelain", "--untracked-files=no"]))
    if gateway_commit:
        commit = f"{gateway_commit} (the gateway exported from git; the bench from {commit})"
        dirty = False
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu_model,
        "memory_gb": round(memory_gb, 1),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit
        + (" (with uncommitted changes)" if dirty else "")
        + (f"; compared with {compare} in the same run" if compare else ""),
        "load_average": os.getloadavg(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": _command_output(["node", "--version"]),
        "wrk": _command_output(["wrk", "--version"]).split(" [")[0],
    }


def summarize(result: dict[str, Any]) -> str:
    if "rps" in result:
        return (
            f"{result['rps']:,.0f} req/s, p50 {ms(result['p50_ms'])} / p90 {ms(result['p90_ms'])}"
            f" / p99 {ms(result['p99_ms'])} ms, {result['status_errors']} non-2xx, "
            f"{result['socket_errors']} socket errors"
        )
    first, total = result["first_chunk_ms"], result["total_ms"]
    return (
        f"first chunk p50 {ms(first['p50'])} / p99 {ms(first['p99'])} ms, total p50 "
        f"{ms(total['p50'])} / p99 {ms(total['p99'])} ms, chunks {result['chunks']['delivered']:,}"
        f"/{result['chunks']['expected']:,}, {result['failed']} failed {result['errors']}"
    )


def ms(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def clients(count: int) -> str:
    return f"{count} client{'s' if count != 1 else ''}"


def ledger_cell(data: dict[str, Any]) -> str:
    verdicts = data["ledger"]
    charged = sum(v["charged"] for v in verdicts)
    upstream = sum(v["upstream_calls"] for v in verdicts)
    seen = sum(v["client_2xx"] for v in verdicts)
    passed = all(v["pass"] for v in verdicts)
    cut_off = f" (+{charged - seen:,} cut off by the client at its end)" if passed else ""
    return (
        f"{'PASS' if passed else '**FAIL**'}: {charged:,} charged, {upstream:,} upstream calls, "
        f"{seen:,} 2xx seen{cut_off}"
    )


def measured_columns(args: argparse.Namespace) -> list[str]:
    """Return the gateway columns: each backend, then (with --compare) its run as of the
    compared commit, named `<backend>@<commit>`."""
    columns = []
    for backend in args.backends:
        columns.append(backend)
        if args.compare:
            columns.append(f"{backend}@{args.compare}")
    return columns


def render(bench: Bench, info: dict[str, Any], elapsed: float) -> str:
    args, results = bench.args, bench.results
    columns = ["direct", *measured_columns(args)]
    names = {"direct": "direct", **BACKEND_NAMES}
    for column in columns:
        backend, _, commit = column.partition("@")
        if commit:
            names[column] = f"{BACKEND_NAMES[backend]}, as of {commit}"

    def cell(column: str, fn: Any) -> str:
        data = results.get(column)
        if not data or "error" in data or "skipped" in data:
            return "—"
        try:
            return fn(data, column)
        except (KeyError, TypeError, ZeroDivisionError):
            return "—"

    rows: list[tuple[str, Any]] = []
    for c in args.connections:
        label = clients(c)
        rows.append((f"{label}: requests/s", lambda d, _, c=c: f"{d['wrk'][c]['rps']:,.0f}"))
        rows.append(
            (
                f"{label}: latency p50 / p90 / p99 (ms)",
                lambda d, _, c=c: " / ".join(
                    ms(d["wrk"][c][k]) for k in ("p50_ms", "p90_ms", "p99_ms")
                ),
            )
        )
        if c == 1 and "direct" in results and "wrk" in results["direct"]:
            direct_p50 = results["direct"]["wrk"][1]["p50_ms"]
            rows.append(
                (
                    "added p50 latency, 1 client (ms)",
                    lambda d, _, base=direct_p50: f"{d['wrk'][1]['p50_ms'] - base:+.2f}",
                )
            )
    rows.append(
        (
            "requests failed: non-2xx / socket errors (all clients)",
            lambda d, _: (
                f"{sum(r['status_errors'] for r in d['wrk'].values()):,} / "
                f"{sum(r['socket_errors'] for r in d['wrk'].values()):,}"
            ),
        )
    )
    for n in args.streams:
        label = f"{n:,} streams"
        rows.append(
            (
                f"{label}: first chunk p50 / p99 (ms)",
                lambda d, _, n=n: " / ".join(
                    ms(d["streams"][n]["first_chunk_ms"][k]) for k in ("p50", "p99")
                ),
            )
        )
        rows.append(
            (
                f"{label}: whole stream p50 / p99 (ms)",
                lambda d, _, n=n: " / ".join(
                    ms(d["streams"][n]["total_ms"][k]) for k in ("p50", "p99")
                ),
            )
        )
        rows.append(
            (
                f"{label}: chunks delivered / expected, failed streams",
                lambda d, _, n=n: (
                    f"{d['streams'][n]['chunks']['delivered']:,} / "
                    f"{d['streams'][n]['chunks']['expected']:,}, {d['streams'][n]['failed']:,}"
                ),
            )
        )

    def gateway_only(fn: Any) -> Any:
        return lambda d, column: "—" if column == "direct" else fn(d)

    def gateway(d: dict, run: str) -> dict:
        """Return what was metered of the gateway's processes during one run."""
        return d["usage"][run]["gateway"]

    top_c = max(args.connections) if args.connections else None
    top_n = max(args.streams) if args.streams else None
    if top_c:
        rows.append(
            (
                f"gateway peak RSS, {clients(top_c)} (MB)",
                gateway_only(lambda d: f"{gateway(d, f'c{top_c}')['peak_rss_mb']:,.0f}"),
            )
        )
        rows.append(
            (
                f"gateway CPU per request, {clients(top_c)} (ms)",
                gateway_only(
                    lambda d: ms(
                        gateway(d, f"c{top_c}")["cpu_s"] * 1000 / d["wrk"][top_c]["requests"]
                    )
                ),
            )
        )
    if top_n:
        rows.append(
            (
                f"gateway peak RSS, {top_n:,} streams (MB)",
                gateway_only(lambda d: f"{gateway(d, f's{top_n}')['peak_rss_mb']:,.0f}"),
            )
        )
        rows.append(
            (
                f"gateway CPU for {top_n:,} streams (s)",
                gateway_only(lambda d: f"{gateway(d, f's{top_n}')['cpu_s']:.1f}"),
            )
        )
    rows.append(
        (
            "ledger: each upstream call charged once at 1 credit, no hold left open, "
            "balance = Σ entries",
            gateway_only(ledger_cell),
        )
    )

    lines = [
        "| figure | " + " | ".join(names[c] for c in columns) + " |",
        "| --- | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for label, fn in rows:
        lines.append(f"| {label} | " + " | ".join(cell(c, fn) for c in columns) + " |")

    notes = []
    for column in columns[1:]:
        data = results.get(column, {})
        if "skipped" in data:
            notes.append(f"- {names[column]}: not run ({data['skipped']}).")
        elif "error" in data:
            notes.append(f"- {names[column]}: failed: {data['error'].splitlines()[0][:300]}")
    for column in columns[1:]:
        for verdict in results.get(column, {}).get("ledger", []):
            if not verdict["pass"]:
                notes.append(
                    f"- {names[column]}, ledger after {verdict['phase']}: "
                    + "; ".join(verdict["problems"])
                )
        if results.get(column, {}).get("server_errors"):
            logged = ", ".join(
                f"{count:,} {name}" for name, count in results[column]["server_errors"].items()
            )
            notes.append(f"- {names[column]}: the gateway logged {logged}.")
        for n, streams in results.get(column, {}).get("streams", {}).items():
            if streams.get("error_samples"):
                kinds = ", ".join(f"{k} {v}" for k, v in streams["errors"].items() if v)
                notes.append(
                    f"- {names[column]}, {n:,} streams: {kinds}; e.g. "
                    + " · ".join(s[:200] for s in streams["error_samples"][:4])
                )

    load = ", ".join(f"{x:.2f}" for x in info["load_average"])
    header = [
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory_gb']:.0f} GB memory, "
        f"Linux {info['kernel']}, load average {load} at the start; {info['date']}, "
        f"commit {info['commit']}.",
        f"Load: wrk ({info['wrk']}) POSTing a chat completion, {args.duration:g} s per run after "
        f"a {args.warmup:g} s warm-up; streams from bench/stream_load.js (Node {info['node']}), "
        f"{args.chunks} chunks {args.chunk_ms:g} ms apart from bench/mock_upstream.js. Gateway: "
        f"`manage.py serve` (granian WSGI, {os.environ.get('SERVER_THREADS', '1100')} threads), "
        f"DEBUG=False, full metering, openai/{UPSTREAM_MODEL} on the mock. "
        f"{'Quick mode. ' if args.quick else ''}The whole run took {elapsed / 60:.1f} min.",
    ]
    details = [
        "",
        "Per run: CPU seconds of the gateway's process tree, of the PostgreSQL and Redis servers "
        "(pg only), of the mock, of the load generator, and of any other work on the machine "
        "meanwhile (its busy time less all of those); the gateway's peak RSS.",
        "",
        "| backend | run | responses | 2xx | req/s | gateway CPU s | peak RSS MB "
        "| PostgreSQL + Redis CPU s | mock CPU s | load gen CPU s | other work CPU s | wall s "
        "| charged | ledger |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| --- |",
    ]
    others = capacity = 0.0
    for column in columns:
        data = results.get(column, {})
        verdicts = {v["phase"]: v for v in data.get("ledger", [])}
        for key, run in [
            *((f"c{c}", data.get("wrk", {}).get(c)) for c in args.connections),
            *((f"s{n}", data.get("streams", {}).get(n)) for n in args.streams),
        ]:
            if not run:
                continue
            usage = data["usage"].get(key, {})
            gw, mock = usage.get("gateway") or {}, usage.get("mock") or {}
            database = usage.get("database") or {}
            if key.startswith("c"):
                phase = f"{run['connections']} connection(s)"
                responses, good = run["requests"], run["ok"]
                rate = f"{run['rps']:,.0f}"
            else:
                phase = f"{run['streams']} streams"
                responses, good, rate = run["streams"], run["http_200"], "—"
            verdict = verdicts.get(phase)
            others += usage.get("others_cpu_s", 0)
            capacity += usage.get("capacity_cpu_s", 0)
            details.append(
                f"| {names[column]} | {phase} | {responses:,} | {good:,} | {rate} | "
                f"{gw.get('cpu_s', '—')} | {gw.get('peak_rss_mb', '—')} | "
                f"{database.get('cpu_s', '—')} | "
                f"{mock.get('cpu_s', '—')} | {usage.get('loadgen_cpu_s', '—')} | "
                f"{usage.get('others_cpu_s', '—')} | {usage.get('wall_s', '—')} | "
                f"{verdict['charged'] if verdict else '—'} | "
                f"{('PASS' if verdict['pass'] else 'FAIL') if verdict else '—'} |"
            )
    if capacity:
        header.append(
            f"Other work on the machine used {others:,.0f} CPU-s of the {capacity:,.0f} "
            f"available during the measured runs ({others / capacity:.0%})."
        )
    return "\n".join([*header, "", *lines, *(["", *notes] if notes else []), *details]) + "\n"


# --- main ----------------------------------------------------------------------------------------


def ensure_tools() -> str:
    if not shutil.which("node"):
        raise BenchError("Node.js (node, version 18 or later) is needed for the mock and loader")
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    if not shutil.which("apt-get"):
        raise BenchError("wrk is missing: install it (apt-get install wrk, brew install wrk)")
    print("Installing wrk with apt-get...", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    install = [*sudo, "apt-get", "install", "-y", "-q", "wrk"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "timeout": 600}
    if subprocess.run(install, check=False, **quiet).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update", "-q"], check=False, **quiet)
        subprocess.run(install, check=False, **quiet)
    wrk = shutil.which("wrk")
    if not wrk:
        raise BenchError("could not install wrk with apt-get; install it and run again")
    return wrk


def export_commit(revision: str, workdir: Path) -> tuple[Path, str]:
    """Export the gateway's files as of `revision` into the work folder; return it and the
    commit's short name."""
    short = _command_output(["git", "rev-parse", "--short", "--verify", f"{revision}^{{commit}}"])
    if not short or " " in short:
        raise BenchError(f"{revision!r} is not a commit of this repository")
    target = workdir / f"gateway-{short}"
    target.mkdir()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", short], cwd=BASE_DIR, capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise BenchError(f"git archive {short} failed: {archive.stderr.decode(errors='replace')}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    print(f"Measuring the gateway as of commit {short} (exported to {target}).", flush=True)
    return target, short


def render_saved(path: Path, args: argparse.Namespace) -> int:
    """Print (and write to --output) the report of an earlier run, from its .json."""
    saved = json.loads(path.read_text())
    config = argparse.Namespace(**{**vars(args), **saved["config"]})
    results = {}
    for name, data in saved["results"].items():  # JSON made the run sizes strings
        for kind in ("wrk", "streams"):
            if kind in data:
                data[kind] = {int(size): run for size, run in data[kind].items()}
        results[name] = data
    bench = Bench(args=config, procs=Processes(), workdir=path.parent, results=results)
    report = render(bench, saved["machine"], saved.get("elapsed_s", 0.0))
    print(report)
    Path(args.output or path.with_suffix(".md")).write_text(report)
    return 0


def write_report(output: Path, report: str, raw: dict[str, Any]) -> None:
    """Print the report and write it to `output`, with the raw figures beside it in .json."""
    print("\n" + report)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    output.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    print(f"Written to {output} (and {output.with_suffix('.json').name}).")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render_saved(Path(args.render), args)
    started = time.monotonic()
    # Ctrl-C, SIGTERM and a closed terminal all stop every process the run started (SIGINT too
    # when the shell started this in the background with SIGINT ignored).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_signal)
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="llm-bench-"))
    bench = Bench(args=args, procs=procs, workdir=workdir)
    pg_used = False
    failed = False
    try:
        bench.wrk = ensure_tools()
        limit = raise_open_files_limit()
        if max(args.streams, default=0) * 4 > limit:
            print(f"warning: open files limited to {limit}", file=sys.stderr)
        if args.gateway_commit:
            bench.gateway_dir, args.gateway_commit = export_commit(args.gateway_commit, workdir)
        sources = {"": bench.gateway_dir}
        if args.compare:
            sources["compare"], args.compare = export_commit(args.compare, workdir)
        info = machine(args.gateway_commit, args.compare)
        bench.start_mock()
        bench.results["direct"] = bench.run_direct()
        for column in measured_columns(args):
            backend, _, commit = column.partition("@")
            if backend == "pg":
                problem = postgres_problem(args.pg_url, args.redis_url)
                if problem:
                    print(f"== {BACKEND_NAMES[backend]}: skipped ({problem})", flush=True)
                    bench.results[column] = {"skipped": problem}
                    continue
                pg_used = True
            bench.gateway_dir = sources["compare" if commit else ""]
            try:
                bench.results[column] = bench.run_gateway(backend)
            except Exception as error:  # report it in the table; go on with the next backend
                if not isinstance(error, BenchError):
                    traceback.print_exc()
                print(f"  {column} failed: {error}", file=sys.stderr, flush=True)
                bench.results[column] = {"error": str(error)}
                failed = True
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping everything it started.", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if pg_used:
            with contextlib.suppress(Exception):
                reset_postgres(args.pg_url, create=False)
                reset_redis(args.redis_url)
        if args.keep:
            print(f"Logs and databases kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    elapsed = time.monotonic() - started
    raw = {"machine": info, "config": vars(args), "elapsed_s": elapsed, "results": bench.results}
    write_report(Path(args.output), render(bench, info, elapsed), raw)
    ledger_ok = all(
        verdict["pass"] for data in bench.results.values() for verdict in data.get("ledger", [])
    )
    return 0 if ledger_ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
