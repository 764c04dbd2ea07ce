"""Tiny bases of the SLM families people deploy, each with a LoRA adapter: what the families stack test serves.

Each base is a real architecture (the model class its checkpoints load as) with a tiny generated config
(hidden 128, 2 heads of 64, 2 layers) and random weights, sharing the demo base's tokenizer; each adapter is a
random rank-8 LoRA over the modules that family's adapters usually target, whose ``adapter_config.json`` names
its base. What this tests is the architecture: that vLLM on CPU loads it and serves a LoRA adapter on it through
the fleet. It does not test the real checkpoints' tokenizers, chat templates or tool parsers.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Family:
    base: str
    """The tiny base's name in the fleet (and the name its adapter's ``base_model_name_or_path`` ends in)."""
    model_type: str
    """transformers' model_type of the architecture."""
    architecture: str
    stands_for: str
    """The checkpoints of this architecture people deploy."""
    target_modules: tuple[str, ...]


FAMILIES = (
    Family("tiny-llama3", "llama", "LlamaForCausalLM", "Llama 3.2 1B/3B Instruct", ("q_proj", "v_proj")),
    Family("tiny-qwen3", "qwen3", "Qwen3ForCausalLM", "Qwen3 0.6B-8B", ("q_proj", "v_proj")),
    # Phi-3's attention has one fused projection: its adapters target qkv_proj.
    Family("tiny-phi3", "phi3", "Phi3ForCausalLM", "Phi-3.5-mini, Phi-4-mini", ("qkv_proj", "o_proj")),
    Family("tiny-gemma3", "gemma3_text", "Gemma3ForCausalLM", "Gemma 3 1B (text)", ("q_proj", "v_proj")),
    Family("tiny-smollm3", "smollm3", "SmolLM3ForCausalLM", "SmolLM3 3B", ("q_proj", "v_proj")),
    Family("tiny-mistral", "mistral", "MistralForCausalLM", "Ministral 8B, Mistral 7B", ("q_proj", "v_proj")),
)
BY_BASE = {f.base: f for f in FAMILIES}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def generator_key(tokenizer_dir: str | Path) -> str:
    """This module's source, the libraries' versions and the tokenizer it copies."""
    from importlib.metadata import version

    text = Path(__file__).read_bytes() + " ".join(version(p) for p in ("torch", "transformers", "peft")).encode()
    text += b"".join((Path(tokenizer_dir) / name).read_bytes() for name in TOKENIZER_FILES
                     if (Path(tokenizer_dir) / name).is_file())
    return hashlib.sha256(text).hexdigest()[:16]


def _config(family: Family, tokenizer):
    from transformers import AutoConfig

    return AutoConfig.for_model(
        family.model_type, vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, torch_dtype="float32")


def generate(out_dir: str | Path, tokenizer_dir: str | Path) -> dict:
    """Write ``<base>/`` and ``<base>-lora/`` for every family under ``out_dir``; return the summary that
    ``ensure`` keeps (paths and the generator key). Seconds: nothing is trained."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    summary = {"generator": generator_key(tokenizer_dir), "families": {}}
    for i, family in enumerate(FAMILIES):
        torch.manual_seed(i)
        base_dir, adapter_dir = out / family.base, out / f"{family.base}-lora"
        shutil.rmtree(base_dir, ignore_errors=True)
        shutil.rmtree(adapter_dir, ignore_errors=True)
        model = AutoModelForCausalLM.from_config(_config(family, tokenizer))
        assert type(model).__name__ == family.architecture, (family, type(model).__name__)
        model.config.name_or_path = family.base
        model.save_pretrained(base_dir, safe_serialization=True)
        tokenizer.save_pretrained(base_dir)
        # Random (not zero) LoRA weights: the adapter changes the base's output from the first token.
        lora = LoraConfig(r=8, lora_alpha=16, target_modules=list(family.target_modules), init_lora_weights=False)
        peft_model = get_peft_model(model, lora)
        peft_model.peft_config["default"].base_model_name_or_path = f"slmfleet/{family.base}"
        peft_model.save_pretrained(adapter_dir)
        summary["families"][family.base] = {"base": str(base_dir), "adapter": str(adapter_dir),
                                            "architecture": family.architecture}
    (out / "families.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def ensure(out_dir: str | Path, tokenizer_dir: str | Path) -> dict:
    """The family assets under ``out_dir``, generated again when their generator changed."""
    summary_file = Path(out_dir) / "families.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        if summary.get("generator") == generator_key(tokenizer_dir):
            return summary
    return generate(out_dir, tokenizer_dir)
