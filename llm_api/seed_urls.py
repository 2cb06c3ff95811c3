"""The seed-compatible routes (seeds 000, 001 and 003; seed 002's and 004's are in llm_api.urls)."""

from django.urls import path

from llm_api.seeds import seed000, seed001, seed003

urlpatterns = [
    path("generate", seed000.GenerateApi.as_view(), name="seed000-generate"),
    path(
        "text_model/chat/completion",
        seed001.TextModelCompletionApi.as_view(),
        name="seed001-text-completion",
    ),
    path(
        "text_model/chat/stream", seed001.TextModelStreamApi.as_view(), name="seed001-text-stream"
    ),
    path(
        "image_model/chat/completion",
        seed001.ImageModelCompletionApi.as_view(),
        name="seed001-image-completion",
    ),
    path(
        "image_model/chat/stream",
        seed001.ImageModelStreamApi.as_view(),
        name="seed001-image-stream",
    ),
    path("api/v1/generate", seed003.OllamaGenerateApi.as_view(), name="seed003-generate"),
    path("api/v1/chat", seed003.OllamaChatApi.as_view(), name="seed003-chat"),
    path("api/v1/completions", seed003.OllamaCompletionsApi.as_view(), name="seed003-completions"),
]
