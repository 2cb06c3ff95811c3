"""SmolLM2 under llama.cpp's server, started as `manage.py runlocal` starts it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llm_api.localmodel import ServerProcess, llama_ready, start_llama_server
from tests.live.processes import free_port, stop, track


@dataclass
class LlamaServer:
    """SmolLM2 under llama.cpp's OpenAI-compatible server; `base_url` ends in /v1."""

    process: ServerProcess
    base_url: str

    @classmethod
    @contextlib.contextmanager
    def running(cls, log_dir: Path, *, timeout: float = 120.0) -> Iterator[LlamaServer]:
        """Start it on a free loopback port, wait until it answers, stop it on the way out."""
        port = free_port()
        process = start_llama_server(
            host="127.0.0.1", port=port, log_path=log_dir / "llama-server.log"
        )
        track(process)
        try:
            server = cls(process=process, base_url=f"http://127.0.0.1:{port}/v1")
            llama_ready(process, server.base_url, timeout=timeout)
            yield server
        finally:
            stop(process)
