"""Text embeddings (MiniLM, TF-IDF fallback) for task routing; the model libraries stay here."""
