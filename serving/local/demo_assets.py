"""Generate a tiny base model and task-specialised LoRA adapters for demos and tests.

No model hub is reachable here, so the demo fleet is made on the spot: a Llama-architecture
model small enough to train on a CPU in seconds (hidden 128, 2 heads of 64, 2 layers; vLLM's
CPU attention kernel rejects head dims under 32) and PEFT LoRA adapters trained briefly on toy
tasks, so that each route visibly answers differently.

Every task reads ``in: <words>\\nout:`` and answers on the same line:

    base     in: red fox\\nout: red fox          (the base model learns to echo)
    shout    in: red fox\\nout: RED FOX
    reverse  in: red fox\\nout: fox red          (the words in reverse order)
    json     in: red fox\\nout: {"text": " red fox"}

The tasks share the base's echo skill and differ in one learnable twist, which is what a
fine-tune adds to a base in practice.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BASE_NAME = "tiny-llama"
WORDS = (
    "red blue green fox cat dog sun moon star tree river stone cloud rain wind fire "
    "bird fish road hill lake snow leaf rock wave song book door lamp ship"
).split()
EOS = "</s>"
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}in: {{ m['content'] }}\nout:"
    "{% endif %}{% endfor %}"
)


@dataclass(frozen=True)
class Task:
    name: str
    answer: Callable[[list[str]], str]
    description: str


TASKS = {
    "shout": Task("shout", lambda w: " ".join(w).upper(), "answers in upper case"),
    "reverse": Task("reverse", lambda w: " ".join(reversed(w)), "answers the words reversed"),
    # The leading space keeps each word the same token as in a plain answer (byte-level BPE
    # merges a quote with the word after it otherwise), which a tiny LoRA learns in seconds.
    "json": Task("json", lambda w: json.dumps({"text": " " + " ".join(w)}), "answers in a JSON shape"),
}
ECHO = Task("base", lambda w: " ".join(w), "echoes the words")


def prompt_for(words: list[str]) -> str:
    return f"in: {' '.join(words)}\nout:"


def _example(task: Task, rng: random.Random) -> str:
    words = rng.sample(WORDS, rng.randint(1, 3))
    if task is ECHO:
        # The base echoes every form an adapter answers in, so that each answer token has a
        # trained output embedding before the adapters (which do not touch lm_head) need it.
        form = rng.choice([TASKS["shout"].answer, TASKS["json"].answer, ECHO.answer, ECHO.answer])
        text = form(words)
        return f"in: {text}\nout: {text}{EOS}"
    return f"{prompt_for(words)} {task.answer(words)}{EOS}"


def _train_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [_example(t, rng) for t in (ECHO, *TASKS.values()) for _ in range(300)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<s>", EOS, "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token=EOS, pad_token="<pad>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def _batches(tasks: list[Task], tokenizer, rng: random.Random, steps: int, batch: int):
    for _ in range(steps):
        texts = [_example(rng.choice(tasks), rng) for _ in range(batch)]
        enc = tokenizer(texts, return_tensors="pt", padding=True)
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        # Loss only on the answer: the prompt is given, the model learns what follows "out:".
        for i, text in enumerate(texts):
            n_prompt = len(tokenizer(text.split("out:")[0] + "out:")["input_ids"])
            labels[i, :n_prompt] = -100
        yield enc["input_ids"], enc["attention_mask"], labels


def _train(model, params, batches, lr: float) -> float:
    import torch

    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    loss = torch.tensor(0.0)
    for input_ids, attention_mask, labels in batches:
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return float(loss.detach())


def generator_key() -> str:
    """What the assets depend on: this module's source and the versions of the libraries that train.

    ``ensure_assets`` regenerates assets whose summary carries another key.
    """
    from importlib.metadata import version

    text = Path(__file__).read_bytes() + " ".join(version(p) for p in TRAINING_LIBRARIES).encode()
    return hashlib.sha256(text).hexdigest()[:16]


TRAINING_LIBRARIES = ("torch", "transformers", "peft", "tokenizers")


def generate(out_dir: str | Path, *, base_steps: int = 400, adapter_steps: int = 250) -> dict:
    """Write ``base/`` (a tiny Llama) and ``adapters/<task>/`` (PEFT LoRA) under ``out_dir``.

    Returns a summary (paths, final training losses, the generator key). Deterministic for given
    step counts and library versions.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(2)
    out = Path(out_dir)
    base_dir, adapters_dir = out / "base", out / "adapters"
    tokenizer = _train_tokenizer(base_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    rng = random.Random(1)
    # The base sees every task's prompts but always answers with the echo: it knows the format,
    # and the adapters each add one twist on top.
    losses = {"base": _train(model, model.parameters(), _batches([ECHO], tokenizer, rng, base_steps, 32), 3e-3)}
    model.config.name_or_path = BASE_NAME
    model.save_pretrained(base_dir, safe_serialization=True)
    model.generation_config.save_pretrained(base_dir)

    for i, (name, task) in enumerate(TASKS.items()):
        lora = LoraConfig(
            r=8,
            lora_alpha=16,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            lora_dropout=0.0,
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, lora)
        trainable = [p for p in peft_model.parameters() if p.requires_grad]
        batches = _batches([task], tokenizer, random.Random(10 + i), adapter_steps, 32)
        losses[name] = _train(peft_model, trainable, batches, 5e-3)
        adapter_dir = adapters_dir / name
        peft_model.save_pretrained(adapter_dir)
        # PEFT records the training-time path of the base; name the base as the fleet knows it.
        cfg_path = adapter_dir / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = BASE_NAME
        cfg_path.write_text(json.dumps(cfg, indent=2))
        model = peft_model.unload()  # the frozen base, LoRA layers removed, for the next task

    summary = {
        "base": str(base_dir),
        "adapters": {name: str(adapters_dir / name) for name in TASKS},
        "final_loss": {k: round(v, 4) for k, v in losses.items()},
        "generator": generator_key(),
    }
    (out / "assets.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":  # pragma: no cover - handy for quick local runs
    import sys

    print(json.dumps(generate(sys.argv[1] if len(sys.argv) > 1 else "demo-assets"), indent=2))
