from django.urls import path

from llm_api import apis

urlpatterns = [
    path("v1/chat/completions", apis.ChatCompletionsApi.as_view(), name="v1-chat-completions"),
    path("v1/completions", apis.CompletionsApi.as_view(), name="v1-completions"),
    path("v1/embeddings", apis.EmbeddingsApi.as_view(), name="v1-embeddings"),
    path("v1/responses", apis.ResponsesApi.as_view(), name="v1-responses"),
    path("v1/models", apis.ModelsApi.as_view(), name="v1-models"),
    path("api/supported-models/", apis.SupportedModelsApi.as_view(), name="supported-models"),
    path("api/chat/completions/", apis.ProviderChatApi.as_view(), name="provider-chat"),
]
