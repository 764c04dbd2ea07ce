"""LoRA supervised fine-tuning of a specialist on a flywheel dataset, from the base model's own files.

``train_lora`` is the one training function: ``slm-fleet flywheel train`` runs it here (the CPU is
enough for the demo's tiny base), and the RayJob that ``--render rayjob`` prints runs the same
function on a cluster. Each example is rendered with the base's own chat template (so the adapter
learns the exact text the engine will prompt it with), and the loss is on the answer's tokens only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from serving.api.problems import UserError


@dataclass(frozen=True)
class TrainSettings:
    """Hyperparameters (recorded in the adapter's lineage)."""

    rank: int = 8
    alpha: int = 16
    learning_rate: float = 2e-4
    """2e-4 suits 1-8B bases; the demo's tiny base learns in minutes at 5e-3."""
    epochs: float = 3.0
    steps: int | None = None
    """Optimizer steps; overrides epochs when set."""
    batch_size: int = 8
    max_length: int = 512
    seed: int = 0
    target_modules: str = "all-linear"

    def problems(self) -> list[str]:
        out = []
        for name in ("rank", "alpha", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                out.append(f"--{name.replace('_', '-')} must be at least 1")
        if not self.learning_rate > 0:
            out.append("--lr must be above 0")
        if self.steps is None and not self.epochs > 0:
            out.append("--epochs must be above 0")
        if self.steps is not None and self.steps < 1:
            out.append("--steps must be at least 1")
        return out


def render_example(tokenizer, example: dict) -> tuple[str, str]:
    """(prompt, answer) of one dataset row, as the base's chat template renders the conversation."""
    if "prompt" in example:
        return example["prompt"], example["completion"]
    messages, tools = example["messages"], example.get("tools")
    if not messages or messages[-1].get("role") != "assistant":
        raise UserError("a dataset row's messages must end with the assistant's answer; is this a flywheel dataset?")
    prompt = tokenizer.apply_chat_template(messages[:-1], tools=tools, tokenize=False, add_generation_prompt=True)
    whole = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
    if whole.startswith(prompt):
        return prompt, whole[len(prompt):]
    # A template that renders the last turn differently with a generation prompt: take the text.
    return prompt, messages[-1].get("content") or ""


def lr_factor(step: int, steps: int) -> float:
    """The learning rate's multiplier at ``step`` of ``steps``: a linear warmup over the first tenth, then a cosine
    decay to zero. Without the decay the last steps still move the weights at the full rate, so the adapter a
    run ends with is whatever its last few batches made it."""
    warmup = max(1, steps // 10)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _batches(pairs: list[tuple[str, str]], tokenizer, settings: TrainSettings, steps: int):
    import torch

    rng = random.Random(settings.seed)
    eos = tokenizer.eos_token or ""
    order: list[int] = []
    for _ in range(steps):
        if len(order) < settings.batch_size:
            fresh = list(range(len(pairs)))
            rng.shuffle(fresh)
            order += fresh
        picked, order = order[:settings.batch_size], order[settings.batch_size:]
        texts = [pairs[i][0] + pairs[i][1] + eos for i in picked]
        enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=settings.max_length)
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        for row, i in enumerate(picked):
            n_prompt = len(tokenizer(pairs[i][0])["input_ids"])
            labels[row, :n_prompt] = -100  # learn the answer, not the question
        yield enc, torch.as_tensor(labels)


def train_lora(rows: list[dict], base_dir: str | Path, out_dir: str | Path, settings: TrainSettings, *,
               base_name: str, start_from: str | Path | None = None, progress: bool = True) -> dict:
    """Train a LoRA adapter on ``rows`` over the base in ``base_dir``; write it (PEFT) to ``out_dir``.

    ``start_from``: an adapter's directory (PEFT) to go on training, its rank and modules kept, instead of a fresh
    adapter. Returns what the lineage records of the run: steps, final loss, seconds, examples.
    """
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not rows:
        raise UserError("the dataset's train split is empty; build it again with more records")
    torch.manual_seed(settings.seed)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).to(device)
    if start_from is not None:
        model = PeftModel.from_pretrained(model, str(start_from), is_trainable=True)
    else:
        lora = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, target_modules=settings.target_modules,
                          lora_dropout=0.0, task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    model.train()
    pairs = [render_example(tokenizer, r) for r in rows]
    steps = settings.steps or max(1, math.ceil(settings.epochs * len(pairs) / settings.batch_size))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps))
    loss_value = float("nan")
    bar = tqdm(_batches(pairs, tokenizer, settings, steps), total=steps, desc="training", unit="step",
               disable=not progress)
    for enc, labels in bar:
        loss = model(**enc.to(device), labels=labels.to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        loss_value = float(loss.detach())
        bar.set_postfix(loss=f"{loss_value:.3f}")
    out = Path(out_dir)
    model.save_pretrained(out)
    # PEFT writes the path it loaded the base from; name the base as the fleet knows it.
    config_path = out / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_name
    config_path.write_text(json.dumps(config, indent=2))
    return {"steps": steps, "examples": len(pairs), "finalLoss": round(loss_value, 4),
            "seconds": round(time.perf_counter() - started, 2)}


def cached_base(source: str, store) -> Path:
    """The base model's files from its S3 source, fetched once into the user's cache (keyed by what the
    files are, so a rewritten base is fetched again); UserError when the store cannot read it."""
    from serving.adapters.store import AdapterStoreError

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "slm-fleet" / "bases"
    try:
        where = cache / hashlib.sha256(f"{source}\n{store.fingerprint(source)}".encode()).hexdigest()[:16]
        if (where / ".complete").exists():
            return where
        where.mkdir(parents=True, exist_ok=True)
        store.download(source, where)
    except (AdapterStoreError, ValueError) as err:
        raise UserError(f"cannot read the base model at {source} ({err}); give the base's source as its "
                        "baseModels[].source names it, with the S3 environment (AWS_ENDPOINT_URL) that reaches it"
                        ) from None
    if not (where / "config.json").exists():
        raise UserError(f"{source} holds no config.json: is it a base model's directory (what baseModels[].source "
                        "names)?")
    (where / ".complete").write_text(source)
    return where


def lineage(*, dataset: str, dataset_manifest: dict, base_name: str, base_source: str, settings: TrainSettings,
            run: dict, start_from: str | None = None) -> dict:
    """What the pushed version records of where it came from (``start_from``: the adapter it went on training,
    whose rank, alpha and modules it kept, so those settings are not recorded as this run's)."""
    hyperparameters = asdict(settings)
    if start_from is not None:
        for kept in ("rank", "alpha", "target_modules"):
            hyperparameters.pop(kept)
    return {"dataset": dataset, "route": dataset_manifest.get("route"), "cluster": dataset_manifest.get("cluster"),
            "datasetCounts": dataset_manifest.get("counts"), "answers": dataset_manifest.get("answers"),
            "base": {"name": base_name, "source": base_source}, "startFrom": start_from,
            "hyperparameters": hyperparameters, "run": run,
            "trainedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def train_in_ray(rows: list[dict], base_source: str, out_dir: str | Path, settings: TrainSettings, *,
                 base_name: str, gpus: int = 1, start_from: str | None = None,
                 start_sha256: str | None = None) -> dict:
    """``train_lora`` in one Ray Train worker (a GPU where ``gpus``), as the RayJob runs it: the worker fetches
    the base (and ``start_from``, an adapter's S3 source) itself; the adapter comes back to ``out_dir`` here (the
    driver), which pushes it."""
    try:
        from ray.train import ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError:
        raise UserError("--ray-train needs Ray Train in this image: pip install 'ray[train]'") from None

    def loop(config: dict) -> None:
        import tempfile

        import ray.train

        from serving.adapters.store import AdapterStore

        store = AdapterStore()
        base_dir = cached_base(config["base_source"], store)
        with tempfile.TemporaryDirectory() as where, tempfile.TemporaryDirectory() as start_dir:
            if config["start_from"]:
                store.download(config["start_from"], start_dir, sha256=config["start_sha256"])
            run = train_lora(config["rows"], base_dir, where, config["settings"], base_name=config["base_name"],
                             start_from=start_dir if config["start_from"] else None, progress=False)
            files = {p.name: p.read_bytes() for p in Path(where).iterdir() if p.is_file()}
            ray.train.report({"run": json.dumps(run), "files": files})

    trainer = TorchTrainer(loop, train_loop_config={"rows": rows, "base_source": base_source, "settings": settings,
                                                    "base_name": base_name, "start_from": start_from,
                                                    "start_sha256": start_sha256},
                           scaling_config=ScalingConfig(num_workers=1, use_gpu=gpus > 0,
                                                        resources_per_worker={"GPU": gpus} if gpus else None))
    metrics = trainer.fit().metrics
    out = Path(out_dir)
    for name, data in metrics["files"].items():
        (out / name).write_bytes(data)
    return json.loads(metrics["run"])
