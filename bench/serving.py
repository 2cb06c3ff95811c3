"""Which server should run the gateway? Measure Django's cheapest view under each candidate.

    uv run python bench/serving.py                  # every server, 10 s each, 64 connections
    uv run python bench/serving.py --rounds 3       # the median of 3 interleaved rounds
    uv run python bench/serving.py --duration 5 --connections 128 --path /health

Each server runs alone, as one process (one worker) on 127.0.0.1, and serves `GET /` (the
welcome view: the whole middleware stack and DRF, no database) or `--path`. The load comes from
a second process: wrk when it is installed (Debian/Ubuntu `apt-get install wrk`, macOS
`brew install wrk`), else a small Python load generator (keep-alive connections in threads)
whose own cost on the same cores caps the figures; the table says which one ran. Only
127.0.0.1 is ever loaded.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from llm_api.localmodel import ServerProcess  # noqa: E402  (needs BASE_DIR on the path)

HOST = "127.0.0.1"
PYTHON = sys.executable


@dataclass(frozen=True)
class Candidate:
    name: str
    argv: Callable[[int], list[str]]
    env: dict[str, str]
    module: str = "granian"  # what must be installed to run it


def _granian(interface: str, target: str) -> Callable[[int], list[str]]:
    return lambda port: [
        *(PYTHON, "-m", "granian", "--interface", interface, "--host", HOST),
        *("--port", str(port), "--no-ws", "--no-access-log", "--working-dir", str(BASE_DIR)),
        target,
    ]


def _uvicorn(port: int) -> list[str]:
    return [
        *(PYTHON, "-m", "uvicorn", "project.asgi:application", "--host", HOST),
        *("--port", str(port), "--no-access-log", "--log-level", "warning"),
    ]


CANDIDATES = {
    "granian-wsgi": Candidate(
        "granian WSGI, 1,100 blocking threads (manage.py serve)",
        lambda port: [PYTHON, "manage.py", "serve", "--host", HOST, "--port", str(port)],
        {"SERVER_THREADS": "1100"},
    ),
    "granian-wsgi-64": Candidate(
        "granian WSGI, 64 blocking threads",
        lambda port: [PYTHON, "manage.py", "serve", "--host", HOST, "--port", str(port)],
        {"SERVER_THREADS": "64"},
    ),
    "granian-asgi": Candidate(
        "granian ASGI (Django's async handler)", _granian("asgi", "project.asgi:application"), {}
    ),
    "uvicorn-asgi": Candidate("uvicorn ASGI (Django's async handler)", _uvicorn, {}, "uvicorn"),
}


@dataclass
class Result:
    requests_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# --- load generators -----------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk_ms(text: str, percent: str) -> float:
    match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    return float(match.group(1)) * _UNITS_MS[match.group(2)] if match else float("nan")


def wrk_load(url: str, *, connections: int, duration: int) -> Result:
    """Return wrk's figures for GET `url` (2 threads, `connections` keep-alive connections)."""
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url]
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    non_2xx = re.search(r"Non-2xx or socket errors:\s+(\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    errors += sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    return Result(
        requests_per_second=float(rate.group(1)) if rate else 0.0,
        p50_ms=_wrk_ms(output, "50"),
        p90_ms=_wrk_ms(output, "90"),
        p99_ms=_wrk_ms(output, "99"),
        errors=errors,
    )


def _python_worker(url: str, stop_at: float, latencies: list[float], errors: list[int]) -> None:
    parts = url.split("/", 3)
    host, port = parts[2].split(":")
    path = "/" + (parts[3] if len(parts) > 3 else "")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
        except OSError:
            connection.close()
            ok = False
        latencies.append(time.perf_counter() - started)
        if not ok:
            errors.append(1)


def python_load(url: str, *, connections: int, duration: int) -> Result:
    """Return the figures of a threaded Python load generator (used when wrk is missing)."""
    latencies: list[float] = []
    errors: list[int] = []
    stop_at = time.perf_counter() + duration
    threads = [
        threading.Thread(target=_python_worker, args=(url, stop_at, latencies, errors))
        for _ in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return Result(
        requests_per_second=len(latencies) / duration,
        p50_ms=cuts[49] * 1000,
        p90_ms=cuts[89] * 1000,
        p99_ms=cuts[98] * 1000,
        errors=len(errors),
    )


# --- the run -------------------------------------------------------------------------------------


def measure(candidate: Candidate, args: argparse.Namespace, logs: Path) -> Result:
    """Start `candidate`, warm it up, load it for `args.duration` seconds, stop it."""
    port = free_port()
    # A production start needs its own secrets (the checks project.E001/E002).
    secrets_env = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "API_KEY_SECRET": secrets.token_urlsafe(32),
    }
    env = {**secrets_env, **os.environ, "DEBUG": "False", **candidate.env}
    log_path = logs / f"{port}.log"
    server = ServerProcess.start(
        candidate.name, candidate.argv(port), env=env, log_path=log_path, cwd=BASE_DIR
    )
    try:
        url = f"http://{HOST}:{port}{args.path}"
        server.wait_until_ready(url, timeout=60)
        load = wrk_load if shutil.which("wrk") else python_load
        load(url, connections=args.connections, duration=2)  # warm-up: threads, imports
        return load(url, connections=args.connections, duration=args.duration)
    finally:
        server.stop()


def median_result(results: list[Result]) -> Result:
    """Return the median of each figure over rounds (errors: the total)."""
    return Result(
        requests_per_second=statistics.median(r.requests_per_second for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p90_ms=statistics.median(r.p90_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        errors=sum(r.errors for r in results),
    )


def run_rounds(keys: list[str], args: argparse.Namespace) -> dict[str, list[Result]]:
    """Measure every server once per round, interleaved, so passing load hits each alike."""
    results: dict[str, list[Result]] = {key: [] for key in keys}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as logs:
        for round_number in range(1, args.rounds + 1):
            for key in keys:
                result = measure(CANDIDATES[key], args, Path(logs))
                results[key].append(result)
                print(
                    f"round {round_number}: {key}: {result.requests_per_second:,.0f} req/s",
                    file=sys.stderr,
                    flush=True,
                )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="Seconds of load per server.")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1, help="Report the median of N rounds.")
    parser.add_argument("--path", default="/", help="The view to load (default: the welcome).")
    parser.add_argument(
        "--only", default=",".join(CANDIDATES), help=f"Some of: {', '.join(CANDIDATES)}."
    )
    args = parser.parse_args()
    keys = [key for key in args.only.split(",") if importlib.util.find_spec(CANDIDATES[key].module)]
    results = run_rounds(keys, args)
    generator = "wrk" if shutil.which("wrk") else "Python threads (install wrk for real figures)"
    print(
        f"GET {args.path}, {args.connections} connections, {args.duration} s each, "
        f"median of {args.rounds} round(s), {os.cpu_count()} cores, load from {generator}\n"
    )
    print("| server | requests/s | p50 ms | p90 ms | p99 ms | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for key in args.only.split(","):
        if key not in results:
            print(f"| {CANDIDATES[key].name} | not installed | | | | |")
            continue
        result = median_result(results[key])
        print(
            f"| {CANDIDATES[key].name} | {result.requests_per_second:,.0f} "
            f"| {result.p50_ms:.1f} | {result.p90_ms:.1f} | {result.p99_ms:.1f} "
            f"| {result.errors} |"
        )


if __name__ == "__main__":
    main()
