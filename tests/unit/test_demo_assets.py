"""The generated demo and test assets are cached, keyed by their generator."""

from __future__ import annotations

import json

from serving.local import demo_assets
from serving.local.demo import ensure_assets


def test_assets_are_reused_only_while_their_generator_is_the_same(tmp_path, monkeypatch):
    made = []

    def generate(out):
        made.append(out)
        summary = {"base": str(out), "generator": demo_assets.generator_key()}
        (tmp_path / "assets.json").write_text(json.dumps(summary))
        return summary

    monkeypatch.setattr(demo_assets, "generate_in_child", generate)
    ensure_assets(tmp_path)
    ensure_assets(tmp_path)
    assert len(made) == 1
    (tmp_path / "assets.json").write_text(json.dumps({"base": "old", "generator": "another"}))
    assert ensure_assets(tmp_path)["generator"] == demo_assets.generator_key() and len(made) == 2


def test_the_generator_key_follows_the_training_libraries(monkeypatch):
    import importlib.metadata

    key = demo_assets.generator_key()
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda p: "0.0" if p == "peft" else real(p))
    assert demo_assets.generator_key() != key
