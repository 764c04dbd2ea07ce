"""Task routing: pick the specialist for a prompt, before generation.

A classify route's classes are tried in order by their rules (keywords, regex) first; what no rule
claims goes to the embedding classifier, which picks the class whose example prompts' centroid is
nearest (cosine similarity), or the route's default below ``minSimilarity``.

The embedding is passed in (``embed_factory``, in the fleet ``serving.embedding.embedders.embedder``),
so this module stays free of model libraries and is tested with any embedding.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from serving.api.routes import RouteSpec

Embed = Callable[[list[str]], np.ndarray]
"""Texts -> one L2-normalised row per text."""
EmbedFactory = Callable[[str, list[str]], Embed]
"""(embedding kind of the route's classifier settings, the classes' examples) -> the embedding."""


@dataclass(frozen=True)
class Choice:
    cls: str | None
    """The class picked; None: the route's default."""
    how: str
    """keyword, regex, embedding or default."""
    score: float | None = None
    """Cosine similarity of the embedding pick (or of the best class when falling back to the default)."""


def _keyword_pattern(words: list[str]) -> re.Pattern | None:
    if not words:
        return None
    return re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in words) + r")(?!\w)", re.IGNORECASE)


class TaskClassifier:
    """The classifier of one classify route; ``embed_factory(kind, examples)`` builds its embedding."""

    def __init__(self, route: RouteSpec, embed_factory: EmbedFactory):
        self.route = route
        self.rules = [(c.name, _keyword_pattern(c.keywords), re.compile(c.regex) if c.regex else None)
                      for c in route.classes]
        examples = [(c.name, e) for c in route.classes for e in c.examples]
        self.names = sorted({name for name, _ in examples})
        self.embed = None
        if examples:
            self.embed = embed_factory(route.classifier_settings.embedding, [e for _, e in examples])
            vectors = self.embed([e for _, e in examples])
            centroids = np.stack([vectors[[i for i, (n, _) in enumerate(examples) if n == name]].mean(axis=0)
                                  for name in self.names])
            self.centroids = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)

    def classify(self, text: str) -> Choice:
        for name, keywords, regex in self.rules:
            if keywords is not None and keywords.search(text):
                return Choice(name, "keyword")
            if regex is not None and regex.search(text):
                return Choice(name, "regex")
        if self.embed is None:
            return Choice(None, "default")
        scores = self.centroids @ self.embed([text])[0]
        best = int(np.argmax(scores))
        score = round(float(scores[best]), 4)
        if score < self.route.classifier_settings.min_similarity:
            return Choice(None, "default", score)
        return Choice(self.names[best], "embedding", score)


def content_text(content) -> str:
    """The text of a message's content: a string, or the text parts of a content list."""
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def prompt_text(body: dict) -> str:
    """What is classified: a completion's prompt, or a chat's first user message.

    The first, not the last: every turn of a conversation (a tool result coming back, a follow-up
    question) then goes to the specialist its first turn was classified to, with no state kept
    between requests, whichever router replica answers.
    """
    if "messages" in body:
        for message in body.get("messages") or []:
            if message.get("role") == "user":
                return content_text(message.get("content"))
        return ""
    prompt = body.get("prompt")
    return (" ".join(prompt) if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt)
            else str(prompt or ""))
