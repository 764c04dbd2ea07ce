"""What an adapter is, from its ``adapter_config.json``, checked before any weights move.

Pure: callers read the file (from S3 or disk) and pass its text here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from serving.api.fleet import BaseModelSpec

CONFIG_NAME = "adapter_config.json"
WEIGHT_NAMES = ("adapter_model.safetensors", "adapter_model.bin")


class AdapterConfigError(ValueError):
    """An adapter_config.json that is missing, unreadable or not a LoRA adapter's."""


@dataclass(frozen=True)
class AdapterMeta:
    rank: int
    base_model: str | None
    target_modules: tuple[str, ...]


def parse_adapter_config(text: str | bytes) -> AdapterMeta:
    try:
        cfg = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise AdapterConfigError(f"{CONFIG_NAME} is not valid JSON ({err})") from None
    if not isinstance(cfg, dict):
        raise AdapterConfigError(f"{CONFIG_NAME} must hold a JSON object")
    if cfg.get("peft_type", "LORA") != "LORA":
        raise AdapterConfigError(f"{CONFIG_NAME} has peft_type '{cfg.get('peft_type')}'; only LORA adapters are served")
    rank = cfg.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise AdapterConfigError(f"{CONFIG_NAME} has no valid LoRA rank 'r' (got {rank!r})")
    targets = cfg.get("target_modules") or []
    if isinstance(targets, str):
        targets = [targets]
    return AdapterMeta(rank=rank, base_model=cfg.get("base_model_name_or_path"), target_modules=tuple(targets))


def _model_key(name_or_path: str) -> str:
    """Compare base names the way people write them: last path part, case and . _ - folded."""
    last = name_or_path.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[._-]+", "-", last.lower())


def base_matches(declared: str | None, base: BaseModelSpec) -> bool:
    """Whether an adapter trained on ``declared`` fits ``base``.

    ``declared`` is the adapter's base_model_name_or_path: a hub id, a local path or a name.
    It matches when its last path part equals the base's name or its source's last path part
    (ignoring case and ``.``/``_``/``-``). An adapter that names no base is accepted.
    """
    if not declared:
        return True
    key = _model_key(declared)
    return key in {_model_key(base.name), _model_key(base.source)}


def adapter_problems(meta: AdapterMeta, *, base: BaseModelSpec) -> list[str]:
    """Why this adapter cannot be served on ``base`` (empty when it can)."""
    problems = []
    if not base_matches(meta.base_model, base):
        problems.append(
            f"was trained on base '{meta.base_model}' but is attached to base model '{base.name}' "
            f"(source {base.source}); attach it to the base it was trained on"
        )
    if meta.rank > base.engine.max_lora_rank:
        problems.append(
            f"has LoRA rank {meta.rank}, above maxLoraRank {base.engine.max_lora_rank} of base model "
            f"'{base.name}'; raise baseModels[].engine.maxLoraRank or retrain with a lower rank"
        )
    return problems
