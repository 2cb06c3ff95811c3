"""Dialects: one thin adapter per wire shape (OpenAI, Responses, seeds 000-003).

A dialect parses its route's body into the one `ChatInput`, and writes the pipeline's answer,
stream events and errors in its own shape. It never holds rules or money: those are in
`llm_api.pipeline`, which every dialect hands its call to.
"""
