#!/usr/bin/env node
// A fake OpenAI-compatible upstream for `make bench`: fast enough never to be the bottleneck.
//
//   MOCK_PORT=9100 node bench/mock_upstream.js
//
// POST /v1/chat/completions
//   non-streamed: a small chat.completion with usage (after MOCK_DELAY_MS, default 0)
//   "stream": true: MOCK_CHUNKS (20) chat.completion.chunk events MOCK_CHUNK_INTERVAL_MS (50)
//     apart, the first at once and the last with finish_reason "stop"; then, when
//     stream_options.include_usage is set, OpenAI's usage chunk (no choices); then data: [DONE].
//     Per request: the x-mock-chunks / x-mock-interval-ms / x-mock-delay-ms headers, or the
//     ?chunks= / ?interval_ms= / ?delay_ms= query, override the defaults.
// GET /v1/models    one model (gpt-4o-mini, or MOCK_MODEL)
// GET /stats        what it has served since it started, as JSON (the bench diffs two readings)
//
// Listens on 127.0.0.1 only (MOCK_HOST to change), prints one JSON line {"port": N} when ready.
// No npm packages: Node's own http module.
"use strict";

const http = require("http");

const HOST = process.env.MOCK_HOST || "127.0.0.1";
const PORT = Number(process.env.MOCK_PORT || 0);
const CHUNKS = Number(process.env.MOCK_CHUNKS || 20);
const INTERVAL_MS = Number(process.env.MOCK_CHUNK_INTERVAL_MS || 50);
const DELAY_MS = Number(process.env.MOCK_DELAY_MS || 0);
const MODEL = process.env.MOCK_MODEL || "gpt-4o-mini";
const PROMPT_TOKENS = 12;

const stats = {
  chat: 0, // non-streamed answers sent
  streams_started: 0,
  streams_completed: 0, // [DONE] sent
  streams_aborted: 0, // the client went away first
  models: 0,
  bad_requests: 0,
  not_found: 0,
};

let counter = 0;
const created = () => Math.floor(Date.now() / 1000);

function sendJson(res, status, payload) {
  const body = JSON.stringify(payload);
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(body),
  });
  res.end(body);
}

function option(req, url, header, query, fallback) {
  const raw = req.headers[header] ?? url.searchParams.get(query);
  const value = Number(raw);
  return raw !== undefined && raw !== null && raw !== "" && Number.isFinite(value) && value >= 0
    ? value
    : fallback;
}

function completion(model, maxTokens) {
  const completionTokens = Math.min(20, maxTokens || 20);
  return {
    id: `chatcmpl-mock-${++counter}`,
    object: "chat.completion",
    created: created(),
    model,
    system_fingerprint: "fp_mock",
    choices: [
      {
        index: 0,
        message: { role: "assistant", content: "Hello! This is the benchmark's mock upstream." },
        logprobs: null,
        finish_reason: "stop",
      },
    ],
    usage: {
      prompt_tokens: PROMPT_TOKENS,
      completion_tokens: completionTokens,
      total_tokens: PROMPT_TOKENS + completionTokens,
    },
  };
}

function stream(req, res, url, request) {
  const chunks = Math.max(1, Math.floor(option(req, url, "x-mock-chunks", "chunks", CHUNKS)));
  const interval = option(req, url, "x-mock-interval-ms", "interval_ms", INTERVAL_MS);
  const usage = Boolean(request.stream_options && request.stream_options.include_usage);
  const id = `chatcmpl-mock-${++counter}`;
  const model = request.model || MODEL;
  const stamp = created();
  stats.streams_started++;
  res.writeHead(200, {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
  });
  let sent = 0;
  let timer = null;
  let finished = false;
  res.on("close", () => {
    if (!finished) {
      finished = true;
      stats.streams_aborted++;
      if (timer) clearTimeout(timer);
    }
  });
  const event = (payload) => `data: ${JSON.stringify(payload)}\n\n`;
  const next = () => {
    timer = null;
    if (finished) return;
    const last = sent === chunks - 1;
    const delta = sent === 0 ? { role: "assistant", content: "tok0 " } : { content: `tok${sent} ` };
    let out = event({
      id,
      object: "chat.completion.chunk",
      created: stamp,
      model,
      system_fingerprint: "fp_mock",
      choices: [{ index: 0, delta, logprobs: null, finish_reason: last ? "stop" : null }],
    });
    sent++;
    if (!last) {
      res.write(out);
      timer = setTimeout(next, interval);
      return;
    }
    if (usage) {
      out += event({
        id,
        object: "chat.completion.chunk",
        created: stamp,
        model,
        system_fingerprint: "fp_mock",
        choices: [],
        usage: {
          prompt_tokens: PROMPT_TOKENS,
          completion_tokens: chunks,
          total_tokens: PROMPT_TOKENS + chunks,
        },
      });
    }
    out += "data: [DONE]\n\n";
    finished = true;
    stats.streams_completed++;
    res.end(out);
  };
  next();
}

function chatCompletions(req, res, url) {
  const parts = [];
  req.on("data", (part) => parts.push(part));
  req.on("end", () => {
    let request;
    try {
      request = JSON.parse(Buffer.concat(parts).toString("utf8") || "{}");
    } catch {
      stats.bad_requests++;
      sendJson(res, 400, { error: { message: "Invalid JSON.", type: "invalid_request_error" } });
      return;
    }
    if (request.stream) {
      stream(req, res, url, request);
      return;
    }
    const answer = () => {
      stats.chat++;
      sendJson(res, 200, completion(request.model || MODEL, request.max_tokens));
    };
    const delay = option(req, url, "x-mock-delay-ms", "delay_ms", DELAY_MS);
    if (delay > 0) setTimeout(answer, delay);
    else answer();
  });
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://mock");
  const path = url.pathname.replace(/\/+$/, "");
  if (req.method === "POST" && path === "/v1/chat/completions") {
    chatCompletions(req, res, url);
  } else if (req.method === "GET" && path === "/v1/models") {
    stats.models++;
    sendJson(res, 200, {
      object: "list",
      data: [{ id: MODEL, object: "model", created: 1700000000, owned_by: "bench-mock" }],
    });
  } else if (req.method === "GET" && path === "/stats") {
    sendJson(res, 200, stats);
  } else {
    stats.not_found++;
    sendJson(res, 404, { error: { message: `No route ${req.method} ${path}.`, type: "not_found" } });
  }
});
server.keepAliveTimeout = 65000;
server.headersTimeout = 66000;
server.requestTimeout = 0;
server.listen({ host: HOST, port: PORT, backlog: 4096 }, () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});
const stop = () => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
