"""The LLM route fixtures (a key, a client using it) for the operations tests too."""

from tests.llm_api.conftest import alice_key, key_api, token_prices  # noqa: F401
