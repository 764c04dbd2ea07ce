import json

import pytest

from serving.adapters.meta import AdapterConfigError, AdapterMeta, adapter_problems, base_matches, parse_adapter_config
from serving.api.fleet import BaseModelSpec

BASE = BaseModelSpec(name="llama-3-2-1b", source="s3://models/Llama-3.2-1B/", engine={"maxLoraRank": 16})


@pytest.mark.parametrize("declared,ok", [
    ("llama-3-2-1b", True),
    ("meta-llama/Llama-3.2-1B", True),          # hub id, folded
    ("/data/checkpoints/llama_3.2_1b/", True),  # training-time path
    (None, True),                               # unknown base: accepted
    ("meta-llama/Llama-3.1-8B", False),
    ("qwen3-1.7b", False),
])
def test_base_matches(declared, ok):
    assert base_matches(declared, BASE) is ok


@pytest.mark.parametrize("meta,words", [
    (AdapterMeta(8, "llama-3-2-1b", ()), []),
    (AdapterMeta(32, "llama-3-2-1b", ()), ["rank 32, above maxLoraRank 16"]),
    (AdapterMeta(8, "qwen3-1.7b", ()), ["trained on base 'qwen3-1.7b' but is attached to base model 'llama-3-2-1b'"]),
    (AdapterMeta(64, "qwen3", ()), ["trained on base", "rank 64"]),
])
def test_adapter_problems(meta, words):
    problems = adapter_problems(meta, base=BASE)
    assert len(problems) == len(words)
    for problem, w in zip(problems, words):
        assert w in problem


def test_parse_adapter_config():
    meta = parse_adapter_config(json.dumps({"peft_type": "LORA", "r": 8, "base_model_name_or_path": "b",
                                            "target_modules": ["q_proj", "v_proj"]}))
    assert meta == AdapterMeta(8, "b", ("q_proj", "v_proj"))


@pytest.mark.parametrize("text,words", [
    ("{not json", "not valid JSON"),
    ("[1]", "JSON object"),
    (json.dumps({"peft_type": "PREFIX_TUNING", "r": 8}), "only LORA adapters"),
    (json.dumps({"peft_type": "LORA"}), "no valid LoRA rank"),
    (json.dumps({"r": 0}), "no valid LoRA rank"),
])
def test_parse_adapter_config_rejects(text, words):
    with pytest.raises(AdapterConfigError, match=words):
        parse_adapter_config(text)
