from django.apps import AppConfig


class LlmApiConfig(AppConfig):
    name = "llm_api"
    verbose_name = "LLM API"

    def ready(self) -> None:
        from llm_api import (
            checks,  # noqa: F401  (registers the system checks)
            images,  # noqa: F401  (registers its system check: requests fit an image)
            providers,  # noqa: F401  (connects the setting_changed receiver)
        )
