"""The seed-compatible routes (seeds 000, 001 and 003; seed 002's and 004's are in llm_api.urls)."""

from django.urls import path

from llm_api import apis

urlpatterns = [
    path("generate", apis.GenerateApi.as_view(), name="seed000-generate"),
    path(
        "text_model/chat/completion",
        apis.TextModelCompletionApi.as_view(),
        name="seed001-text-completion",
    ),
    path("text_model/chat/stream", apis.TextModelStreamApi.as_view(), name="seed001-text-stream"),
    path(
        "image_model/chat/completion",
        apis.ImageModelCompletionApi.as_view(),
        name="seed001-image-completion",
    ),
    path(
        "image_model/chat/stream",
        apis.ImageModelStreamApi.as_view(),
        name="seed001-image-stream",
    ),
    path("api/v1/generate", apis.OllamaGenerateApi.as_view(), name="seed003-generate"),
    path("api/v1/chat", apis.OllamaChatApi.as_view(), name="seed003-chat"),
    path("api/v1/completions", apis.OllamaCompletionsApi.as_view(), name="seed003-completions"),
]
