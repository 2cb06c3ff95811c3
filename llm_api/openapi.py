"""The wire shapes of the LLM routes, as OpenAPI schemas for the docs (`/api/schema/`).

The routes validate their bodies by hand (llm_api/schemas.py and each dialect: a serializer tree
per call costs more than the gateway's own work), so their shapes are declared here as plain
OpenAPI 3.0 schemas, referenced by the views' `extend_schema`. They say what a body may hold;
the dialects stay the judges of what is valid (a value the schema allows may still be refused
with a 400 that names the parameter). The schemathesis run (tests/project/test_fuzz.py) checks
every answer against them.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


def one_or_many(item: Schema) -> Schema:
    return {"oneOf": [item, {"type": "array", "items": item, "minItems": 1}]}


def const(value: str) -> Schema:
    """Return the schema of a string that is always `value` (an object's "object" field)."""
    return {"type": "string", "enum": [value]}


STRING = {"type": "string"}
TEXT = {"type": "string", "minLength": 1}
INTEGER = {"type": "integer"}
MODEL = {
    "type": "string",
    "description": "provider/model (e.g. openai/gpt-4o-mini), an alias, or a bare model name "
    "on the default provider; omitted: DEFAULT_MODEL.",
}
SAMPLING: Schema = {
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "max_tokens": {"type": "integer", "minimum": 1},
    "seed": INTEGER,
    "stop": one_or_many(STRING),
}
PENALTIES: Schema = {
    "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
    "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
}
RESPONSE_FORMAT = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
        "json_schema": {"type": "object"},
    },
}
STREAM = {"type": "boolean", "default": False, "description": "Answer as Server-Sent Events."}

CONTENT_PART = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["text", "image_url"]},
        "text": STRING,
        "image_url": {"type": "object", "properties": {"url": STRING, "detail": STRING}},
    },
}
MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {
            "oneOf": [STRING, {"type": "array", "items": CONTENT_PART}],
            "nullable": True,
            "description": "Required, except in an assistant message that has tool_calls.",
        },
        "name": STRING,
        "tool_calls": {"type": "array", "items": {"type": "object"}},
        "tool_call_id": STRING,
    },
}
MESSAGES = {"type": "array", "items": MESSAGE, "minItems": 1}

CHAT_REQUEST: Schema = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "model": MODEL,
        "messages": MESSAGES,
        **SAMPLING,
        **PENALTIES,
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "n": {"type": "integer", "minimum": 1},
        "response_format": RESPONSE_FORMAT,
        "user": STRING,
        "stream": STREAM,
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        "tools": {"type": "array", "items": {"type": "object"}},
        "tool_choice": {"oneOf": [STRING, {"type": "object"}]},
    },
}
COMPLETION_REQUEST: Schema = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "model": MODEL,
        "prompt": {"oneOf": [TEXT, {"type": "array", "items": TEXT, "minItems": 1, "maxItems": 1}]},
        **SAMPLING,
        **PENALTIES,
        "n": {"type": "integer", "minimum": 1},
        "user": STRING,
        "stream": STREAM,
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
    },
}
EMBEDDINGS_REQUEST: Schema = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "model": MODEL,
        "input": one_or_many(TEXT),
        "encoding_format": {"type": "string", "enum": ["float", "base64"], "default": "float"},
        "user": STRING,
    },
}
RESPONSES_REQUEST: Schema = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "model": MODEL,
        "input": {"oneOf": [TEXT, {"type": "array", "items": {"type": "object"}, "minItems": 1}]},
        "instructions": STRING,
        "temperature": SAMPLING["temperature"],
        "top_p": SAMPLING["top_p"],
        "max_output_tokens": {"type": "integer", "minimum": 1},
        "stream": STREAM,
        "user": STRING,
        "store": {"type": "boolean"},
        "metadata": {"type": "object", "additionalProperties": STRING},
    },
}
SEED001_TEXT_REQUEST: Schema = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "messages": MESSAGES,
        **{name: SAMPLING[name] for name in ("temperature", "top_p", "max_tokens", "seed")},
        **PENALTIES,
        "response_format": RESPONSE_FORMAT,
    },
}
SEED003_GENERATE_REQUEST: Schema = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "model": MODEL,
        "prompt": TEXT,
        "system": STRING,
        "images": {"type": "array", "items": {"type": "string", "format": "byte"}},
        **SAMPLING,
        "stream": STREAM,
    },
}
SEED003_CHAT_REQUEST: Schema = {
    "type": "object",
    "required": ["messages"],
    "properties": {"model": MODEL, "messages": MESSAGES, **SAMPLING, "stream": STREAM},
}

# --- answers -----------------------------------------------------------------------------------

USAGE = nullable(
    {
        "type": "object",
        "properties": {
            "prompt_tokens": INTEGER,
            "completion_tokens": INTEGER,
            "total_tokens": INTEGER,
            "estimated": {"type": "boolean", "description": "Counted by the gateway."},
        },
    }
)
FINISH_REASON = nullable(STRING)


def completion(kind: str, choice: Schema) -> Schema:
    """Return the schema of a completion answer of `kind` whose choices are `choice`s."""
    return {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": STRING,
            "object": const(kind),
            "created": INTEGER,
            "model": STRING,
            "choices": {"type": "array", "items": choice},
            "usage": USAGE,
        },
    }


CHAT_COMPLETION = completion(
    "chat.completion",
    {
        "type": "object",
        "required": ["index", "message", "finish_reason"],
        "properties": {
            "index": INTEGER,
            "message": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": const("assistant"),
                    "content": nullable(STRING),
                    "refusal": nullable(STRING),
                    "tool_calls": {"type": "array", "items": {"type": "object"}},
                },
            },
            "finish_reason": FINISH_REASON,
        },
    },
)
TEXT_COMPLETION = completion(
    "text_completion",
    {
        "type": "object",
        "required": ["text", "index", "finish_reason"],
        "properties": {"text": STRING, "index": INTEGER, "finish_reason": FINISH_REASON},
    },
)
EMBEDDINGS: Schema = {
    "type": "object",
    "required": ["object", "data", "model"],
    "properties": {
        "object": const("list"),
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["object", "index", "embedding"],
                "properties": {
                    "object": const("embedding"),
                    "index": INTEGER,
                    "embedding": {
                        "oneOf": [
                            {"type": "array", "items": {"type": "number"}},
                            {"type": "string", "description": "base64 of float32s"},
                        ]
                    },
                },
            },
        },
        "model": STRING,
        "usage": USAGE,
    },
}
RESPONSE: Schema = {
    "type": "object",
    "required": ["id", "object", "created_at", "status", "model", "output"],
    "properties": {
        "id": STRING,
        "object": const("response"),
        "created_at": INTEGER,
        "status": STRING,
        "model": STRING,
        "output": {"type": "array", "items": {"type": "object"}},
        "usage": nullable({"type": "object"}),
    },
}
MODELS: Schema = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": const("list"),
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "object"],
                "properties": {
                    "id": STRING,
                    "object": const("model"),
                    "created": INTEGER,
                    "owned_by": STRING,
                    "alias_of": STRING,
                },
            },
        },
    },
}
SEED_REPLY: Schema = {
    "type": "object",
    "required": ["response"],
    "properties": {"response": STRING},
}
SEED003_REPLY: Schema = {
    "type": "object",
    "required": ["model", "response", "done"],
    "properties": {
        "model": STRING,
        "response": STRING,
        "done": {"type": "boolean"},
        "message": {"type": "object"},
        "prompt_eval_count": INTEGER,
        "eval_count": INTEGER,
    },
}

# One Server-Sent Event (OpenAPI 3.2's `itemSchema` reading of text/event-stream, which
# schemathesis checks each event against).
EVENTS = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "string",
            "description": "One chunk of the answer as JSON in the route's streamed shape "
            "(OpenAI's routes end with `[DONE]`).",
        },
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}


def answers(schema: Schema | None, *, streams: bool = True) -> dict:
    """Return the schema's 200 answers: `schema` as JSON (None: none), SSE when it streams."""
    found: dict = {} if schema is None else {(200, "application/json"): schema}
    if streams:
        found[(200, "text/event-stream")] = EVENTS
    return found
