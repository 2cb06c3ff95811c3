#!/usr/bin/env node
// Stream loader of `make bench`: open N concurrent chat completion streams at once and time them.
//
//   node bench/stream_load.js --url http://127.0.0.1:8000/v1/chat/completions --streams 1000 \
//     [--key sk-llm-...] [--model openai/gpt-4o-mini] [--chunks 20] [--timeout-ms 60000]
//
// Every stream is a new connection (keep-alive off, no socket limit), all started in one go.
// Per stream it measures the time to the first content chunk and to the end ([DONE]), and
// counts the content chunks (data events whose choices carry delta.content). A stream is ok
// when it answered 200, delivered the expected number of content chunks and ended with [DONE];
// otherwise it counts under one error kind: status (non-200), connection, timeout (not done
// within --timeout-ms), sse_error (an error event), incomplete (ended without [DONE]) or short
// (fewer chunks than expected). Prints one JSON object on stdout; times are in milliseconds.
"use strict";

const http = require("http");

function args(argv) {
  const out = {
    url: "",
    streams: 100,
    key: "",
    model: "gpt-4o-mini",
    chunks: 20,
    timeoutMs: 60000,
    maxTokens: 64,
  };
  for (let i = 2; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, "");
    const value = argv[i + 1];
    if (name === "url") out.url = value;
    else if (name === "streams") out.streams = Number(value);
    else if (name === "key") out.key = value;
    else if (name === "model") out.model = value;
    else if (name === "chunks") out.chunks = Number(value);
    else if (name === "timeout-ms") out.timeoutMs = Number(value);
    else if (name === "max-tokens") out.maxTokens = Number(value);
    else throw new Error(`unknown option --${name}`);
  }
  if (!out.url) throw new Error("--url is required");
  return out;
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  const rank = Math.ceil((p / 100) * sorted.length) - 1;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.max(0, rank))] * 10) / 10;
}

function summary(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted.length ? Math.round(sorted[sorted.length - 1] * 10) / 10 : null,
  };
}

function runStream(options, agent, body, t0) {
  return new Promise((resolve) => {
    const url = new URL(options.url);
    const result = {
      status: 0,
      firstMs: null,
      totalMs: null,
      chunks: 0,
      done: false,
      error: null,
      detail: "",
    };
    let settled = false;
    let timer = null;
    let lastEvent = ""; // the last data event that carried no content (for error reports)
    const finish = (error, detail) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      result.totalMs = performance.now() - t0;
      if (!error && result.status !== 200) error = "status";
      if (!error && !result.done) {
        error = "incomplete";
        detail = `ended after ${result.chunks} chunk(s) without [DONE]${lastEvent ? `, last: ${lastEvent}` : ""}`;
      }
      if (!error && result.chunks < options.chunks) {
        error = "short";
        detail = `[DONE] after ${result.chunks} chunk(s)`;
      }
      result.error = error;
      result.detail = detail || "";
      resolve(result);
    };
    const headers = {
      "Content-Type": "application/json",
      "Content-Length": Buffer.byteLength(body),
      Accept: "application/json", // what the OpenAI SDKs send, for streams too
    };
    if (options.key) headers["X-API-Key"] = options.key;
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname + url.search,
        method: "POST",
        headers,
        agent,
      },
      (res) => {
        result.status = res.statusCode;
        let buffer = "";
        let errorBody = "";
        res.setEncoding("utf8");
        res.on("data", (text) => {
          if (res.statusCode !== 200) {
            if (errorBody.length < 300) errorBody += text;
            return;
          }
          buffer += text;
          let newline;
          while ((newline = buffer.indexOf("\n")) >= 0) {
            const line = buffer.slice(0, newline).replace(/\r$/, "");
            buffer = buffer.slice(newline + 1);
            if (!line.startsWith("data:")) continue;
            const payload = line.slice(5).trim();
            if (payload === "[DONE]") {
              result.done = true;
              continue;
            }
            let event;
            try {
              event = JSON.parse(payload);
            } catch {
              continue;
            }
            if (event && event.error) {
              finish("sse_error", JSON.stringify(event.error).slice(0, 200));
              req.destroy();
              return;
            }
            const choices = (event && event.choices) || [];
            if (choices.some((choice) => choice.delta && choice.delta.content)) {
              result.chunks++;
              if (result.firstMs === null) result.firstMs = performance.now() - t0;
            } else {
              lastEvent = payload.slice(0, 160);
            }
          }
        });
        res.on("end", () =>
          finish(null, res.statusCode !== 200 ? `${res.statusCode} ${errorBody.slice(0, 200)}` : "")
        );
        res.on("error", (error) => finish("connection", error.code || error.message));
        res.on("aborted", () => finish("connection", "aborted"));
      }
    );
    timer = setTimeout(() => {
      finish("timeout", `no end after ${options.timeoutMs} ms`);
      req.destroy();
    }, options.timeoutMs);
    req.on("error", (error) => finish("connection", error.code || error.message));
    req.end(body);
  });
}

async function main() {
  const options = args(process.argv);
  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  const body = JSON.stringify({
    model: options.model,
    messages: [{ role: "user", content: "Tell me a short story." }],
    max_tokens: options.maxTokens,
    stream: true,
    stream_options: { include_usage: true },
  });
  const started = performance.now();
  const pending = [];
  for (let i = 0; i < options.streams; i++) {
    pending.push(runStream(options, agent, body, performance.now()));
  }
  const results = await Promise.all(pending);
  const wallMs = performance.now() - started;
  const errors = { status: 0, connection: 0, timeout: 0, sse_error: 0, incomplete: 0, short: 0 };
  const statuses = {};
  const samples = [];
  const sampled = {};
  for (const result of results) {
    statuses[result.status] = (statuses[result.status] || 0) + 1;
    if (result.error) {
      errors[result.error]++;
      sampled[result.error] = (sampled[result.error] || 0) + 1;
      if (sampled[result.error] <= 2) samples.push(`${result.error}: ${result.detail}`);
    }
  }
  const ok = results.filter((result) => !result.error);
  const out = {
    streams: options.streams,
    ok: ok.length,
    http_200: results.filter((result) => result.status === 200).length,
    failed: options.streams - ok.length,
    errors,
    statuses,
    error_samples: samples,
    chunks: {
      delivered: results.reduce((sum, result) => sum + result.chunks, 0),
      expected: options.streams * options.chunks,
    },
    first_chunk_ms: summary(results.filter((r) => r.firstMs !== null).map((r) => r.firstMs)),
    total_ms: summary(ok.map((result) => result.totalMs)),
    wall_ms: Math.round(wallMs),
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(2);
});
