"""The in-house OpenAI-compatible server: out of the box, llama.cpp serving SmolLM2.

Same wire protocol as OpenAI, so the same SDK and code; what differs is what the server can
honour. llama.cpp (`llama_cpp.server`) returns one choice whatever `n` says, sends no usage in
streams (the gateway then estimates it), ignores unknown fields such as `stream_options`, and
constrains output with `{"type": "json_object", "schema": ...}` rather than `json_schema`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from llm_api.providers.base import Capabilities
from llm_api.providers.openai import OpenAIProvider
from llm_api.providers.timeouts import Timeouts


class InhouseProvider(OpenAIProvider):
    required_options = {"base_url": "INHOUSE_BASE_URL"}
    capabilities = Capabilities(images=False, n=False, embeddings=False, stream_usage=False)

    def __init__(self, name: str, options: dict[str, Any], timeout: float | Timeouts) -> None:
        super().__init__(name, options, timeout)
        # SmolLM2 reads no images and serves no embeddings; another model may (OPTIONS flags).
        self.capabilities = replace(
            type(self).capabilities,
            images=bool(options.get("images", False)),
            embeddings=bool(options.get("embeddings", False)),
        )

    def api_key(self) -> str:
        """Return the configured key, or a placeholder: the SDK insists on one."""
        return self.options.get("api_key") or "none"

    def response_format(self, response_format: dict[str, Any]) -> dict[str, Any]:
        """Return `json_schema` as llama.cpp's schema-constrained `json_object`."""
        if response_format.get("type") != "json_schema":
            return response_format
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return {"type": "json_object", "schema": schema}
