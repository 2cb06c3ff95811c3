-- wrk script of `make bench`: POST one chat completion per request, then print the results as
-- one JSON line (latencies in microseconds) for bench/run.py to read.
--
--   BENCH_BODY='{"model": ...}' BENCH_API_KEY=sk-llm-... wrk -t2 -c64 -d10s --timeout 60s \
--     -s bench/wrk_post.lua http://127.0.0.1:8000/v1/chat/completions
--
-- "status_errors" is wrk's count of responses with a status of 400 or more (it counts no other
-- non-2xx); latencies above --timeout are not recorded and count as "timeouts" instead.

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
  or '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]}'
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_API_KEY")
if key and key ~= "" then
  wrk.headers["X-API-Key"] = key
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "status_errors": %d, '
      .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, '
      .. '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d}}\n',
    summary.requests, summary.duration, summary.bytes, errors.status,
    errors.connect, errors.read, errors.write, errors.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)
  ))
end
