"""`make bench-ab`: gateway variants side by side on SQLite, in alternating rounds.

    make bench-ab                                   # the limits off against on (set high)
    BENCH_AB_COMPARE=c2e44fd make bench-ab          # and that commit as a third variant
    uv run --frozen python bench/ab.py --variant 'logs off: LOG_LEVEL=WARNING' --variant 'as is:'

One wrk run of `make bench` measures a variant at one moment, and whatever else the machine does
then moves its figure by tens of per cent. Here every variant is a gateway of its own, all started
before the first run, and the short runs alternate between them round after round (each round in
another order), so the machine's drift reaches each alike; a variant's figure is the median of
its rounds, with the lowest and highest beside it. Each variant runs on SQLite with the local
cache, against the mock upstream of `make bench` (`bench/mock_upstream.js`), and after the last
round its ledger is checked as `make bench` checks it: each call that reached the upstream
charged once, no hold left open, the balance equal to the sum of the entries.

A variant is `NAME: VAR=VALUE ...` (its environment, over the gateway's defaults) or
`NAME@COMMIT: VAR=VALUE ...` (the gateway as of that commit). Knobs (environment, or the flags of
`--help`): BENCH_AB_ROUNDS (8), BENCH_AB_DURATION (s per run, 3), BENCH_AB_CONNECTIONS (1,64),
BENCH_AB_COMPARE, BENCH_AB_OUTPUT (bench/results/ab.md, and .json beside it).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench_run  # the bench's processes, gateways, wrk and ledger check

LIMITS_OFF = "DEFAULT_RPM_LIMIT=0 DEFAULT_TPM_LIMIT=0 DEFAULT_CONCURRENCY_LIMIT=0"
LIMITS_HIGH = (
    "DEFAULT_RPM_LIMIT=1000000 DEFAULT_TPM_LIMIT=1000000000 DEFAULT_CONCURRENCY_LIMIT=100000"
)
DEFAULT_VARIANTS = [f"limits off: {LIMITS_OFF}", f"limits on, set high: {LIMITS_HIGH}"]


@dataclass
class Variant:
    name: str
    commit: str = ""
    env: dict[str, str] = field(default_factory=dict)
    target: bench_run.Target | None = None
    gateway_env: dict[str, str] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    runs: dict[int, list[dict[str, float]]] = field(default_factory=dict)
    upstream_calls: int = 0
    client_ok: int = 0
    cut_off: int = 0
    ledger: list[dict[str, Any]] = field(default_factory=list)


def parse_variant(text: str) -> Variant:
    head, sep, assignments = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: write NAME: VAR=VALUE ... (or NAME@COMMIT:)")
    name, _, commit = head.strip().partition("@")
    env = {}
    for assignment in assignments.split():
        var, equals, value = assignment.partition("=")
        if not equals or not var:
            raise argparse.ArgumentTypeError(f"{assignment!r} in {text!r}: write VAR=VALUE")
        env[var] = value
    return Variant(name.strip() or head, commit.strip(), env)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", type=parse_variant, dest="variants")
    parser.add_argument("--compare", default=env("BENCH_AB_COMPARE", ""), help="a commit")
    parser.add_argument("--rounds", type=int, default=int(env("BENCH_AB_ROUNDS", "8")))
    parser.add_argument("--duration", type=float, default=float(env("BENCH_AB_DURATION", "3")))
    parser.add_argument("--connections", default=env("BENCH_AB_CONNECTIONS", "1,64"))
    parser.add_argument(
        "--output", default=env("BENCH_AB_OUTPUT", str(bench_run.BENCH_DIR / "results" / "ab.md"))
    )
    args = parser.parse_args(argv)
    args.variants = args.variants or [parse_variant(text) for text in DEFAULT_VARIANTS]
    if args.compare:
        args.variants.append(parse_variant(f"{args.compare}@{args.compare}: {LIMITS_OFF}"))
    args.connections = bench_run._ints(args.connections)
    if args.rounds < 1 or args.duration <= 0 or not args.connections:
        parser.error("--rounds, --duration and --connections must be positive")
    return args


def start(bench: bench_run.Bench, variant: Variant, sources: dict[str, Path]) -> None:
    bench.gateway_dir = sources[variant.commit]
    data_dir = Path(tempfile.mkdtemp(prefix="gateway-", dir=bench.workdir))
    port = bench_run.free_port()
    env = {**bench.gateway_env("sqlite", data_dir, port), **variant.env}
    bench.manage(env, "migrate", "--no-input")
    created = bench.manage(env, "createapikey", bench_run.BENCH_USER, "--create-user")
    key = created.strip().splitlines()[-1].strip()
    bench.manage(env, "grantcredits", bench_run.BENCH_USER, str(bench_run.GRANT_CREDITS))
    variant.baseline = bench.ledger(env)
    log = data_dir / "gateway.log"
    argv = [bench_run.PYTHON, "manage.py", "serve"]
    process = bench.procs.start(argv, env=env, log=log, cwd=bench.gateway_dir)
    bench_run.wait_until_ready(port, "/health", process, log, timeout=120)
    model = f"openai/{bench_run.UPSTREAM_MODEL}"
    variant.target = bench_run.Target(variant.name, port, model, key, process)
    variant.gateway_env = env
    print(f"  {variant.name}: ready on port {port}", flush=True)


def load(bench: bench_run.Bench, variant: Variant, connections: int, seconds: float) -> dict:
    """One wrk run of the variant; count what reached the upstream and what the client saw,
    for its ledger check, and return wrk's result with the worker's CPU per request."""
    assert variant.target is not None and variant.target.process is not None
    tree = bench_run.process_tree(variant.target.process.pid)
    calls, cpu = bench.upstream_calls(), bench_run.cpu_seconds(tree)
    result = bench.run_wrk(variant.target, connections, seconds)
    cpu = bench_run.cpu_seconds(tree) - cpu
    bench.quiesce()  # the requests wrk cut off reach the upstream before the next run
    variant.upstream_calls += bench.upstream_calls() - calls
    variant.client_ok += result["ok"]
    variant.cut_off += connections + result["socket_errors"]
    return {**result, "cpu_ms_per_request": cpu * 1000 / max(1, result["requests"])}


def measure(bench: bench_run.Bench, variant: Variant, connections: int, seconds: float) -> None:
    result = load(bench, variant, connections, seconds)
    variant.runs.setdefault(connections, []).append(
        {
            "rps": result["rps"],
            "p50_ms": result["p50_ms"],
            "cpu_ms_per_request": result["cpu_ms_per_request"],
            "errors": result["status_errors"] + result["socket_errors"],
        }
    )


def check_ledger(bench: bench_run.Bench, variant: Variant) -> None:
    out: dict[str, Any] = {"ledger": []}
    bench.check(
        variant.name,
        variant.gateway_env,
        variant.baseline,
        client_ok=variant.client_ok,
        cut_off=variant.cut_off,
        out=out,
        upstream=variant.upstream_calls,
    )
    variant.ledger = out["ledger"]


def summary(runs: list[dict[str, float]], key: str) -> tuple[float, float, float]:
    values = [run[key] for run in runs]
    return statistics.median(values), min(values), max(values)


def render(args: argparse.Namespace, variants: list[Variant], info: dict[str, Any]) -> str:
    lines = [
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory_gb']:g} GB memory, load "
        f"average {info['load_average'][0]:.2f} at the start; {info['date']}, commit "
        f"{info['commit']}.",
        f"{args.rounds} rounds of {args.duration:g} s per variant and client count, alternating; "
        "the median of the rounds (lowest..highest). SQLite, local cache, one granian worker.",
        "",
        "| variant | clients | requests/s | latency p50 (ms) | gateway CPU per request (ms) "
        "| errors | ledger |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for variant in variants:
        verdict = variant.ledger[0] if variant.ledger else {"pass": False, "problems": ["none"]}
        ledger = "PASS" if verdict["pass"] else "FAIL: " + "; ".join(verdict["problems"])
        for connections in args.connections:
            runs = variant.runs.get(connections, [])
            if not runs:
                continue
            rps, p50, cpu = (summary(runs, key) for key in ("rps", "p50_ms", "cpu_ms_per_request"))
            errors = sum(run["errors"] for run in runs)
            lines.append(
                f"| {variant.name} | {connections} | {rps[0]:,.0f} ({rps[1]:,.0f}..{rps[2]:,.0f}) "
                f"| {p50[0]:.2f} ({p50[1]:.2f}..{p50[2]:.2f}) "
                f"| {cpu[0]:.2f} ({cpu[1]:.2f}..{cpu[2]:.2f}) | {errors} | {ledger} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, bench_run._raise_signal)
    workdir = Path(tempfile.mkdtemp(prefix="llm-bench-ab-"))
    run_args = bench_run.parse_args(["--backends", "sqlite"])
    bench = bench_run.Bench(args=run_args, procs=bench_run.Processes(), workdir=workdir)
    variants: list[Variant] = args.variants
    try:
        bench.wrk = bench_run.ensure_tools()
        sources = {"": bench_run.BASE_DIR}
        for commit in {v.commit for v in variants if v.commit}:
            sources[commit], _ = bench_run.export_commit(commit, workdir)
        info = bench_run.machine()
        bench.start_mock()
        print(f"== starting {len(variants)} gateways", flush=True)
        for variant in variants:
            start(bench, variant, sources)
        for variant in variants:  # warm up: threads, connections, caches
            load(bench, variant, 16, 2)
        for number in range(args.rounds):
            order = variants[number % len(variants) :] + variants[: number % len(variants)]
            for connections in args.connections:
                for variant in order:
                    measure(bench, variant, connections, args.duration)
            print(f"  round {number + 1} of {args.rounds} done", flush=True)
        for variant in variants:
            check_ledger(bench, variant)
    except bench_run.BenchError as error:
        print(f"bench-ab: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbench-ab: interrupted; stopping everything it started.", file=sys.stderr)
        return 130
    finally:
        bench.procs.stop_all()
    raw = {
        "machine": info,
        "config": {k: v for k, v in vars(args).items() if k != "variants"},
        "variants": [
            {"name": v.name, "commit": v.commit, "env": v.env, "runs": v.runs, "ledger": v.ledger}
            for v in variants
        ],
    }
    bench_run.write_report(Path(args.output), render(args, variants, info), raw)
    return 0 if all(v.ledger and v.ledger[0]["pass"] for v in variants) else 1


if __name__ == "__main__":
    sys.exit(main())
