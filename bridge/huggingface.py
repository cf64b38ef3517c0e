"""Hugging Face Transformers sources, the part that needs no framework: reading a ``save_pretrained``
directory's ``config.json`` as untrusted input, and choosing the model class and inputs from it.

A directory is recognised by its ``config.json`` and its weights (``model.safetensors``, a sharded
safetensors index, or a ``pytorch_model.bin`` that is loaded weights-only). Loading it happens in
a child process (bridge/hops/huggingface.py) with ``local_files_only``: bridge never downloads. A
config whose ``auto_map`` points at code shipped with the model is refused unless the user passed
``--trust-code``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import InputError
from bridge.signature import TensorSpec

CONFIG = "config.json"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
"""Weight files ``save_pretrained`` writes, in the order Transformers prefers them."""
_CONFIG_LIMIT = 4 * 1024 * 1024

TASKS = {
    "feature-extraction": "AutoModel",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "fill-mask": "AutoModelForMaskedLM",
    "causal-lm": "AutoModelForCausalLM",
    "image-classification": "AutoModelForImageClassification",
}
"""``--task`` names and the Auto class each loads (the config's ``architectures`` otherwise)."""

DEFAULT_SEQ_LEN = 128
DEFAULT_IMAGE_SIZE = 224
TEXT, VISION = "text", "vision"


def is_pretrained_dir(path: Path) -> bool:
    """A directory with a ``config.json`` and no ``saved_model.pb`` (a SavedModel is not a Transformers folder)."""
    return path.is_dir() and (path / CONFIG).is_file() and not (path / "saved_model.pb").exists()


@dataclass(frozen=True)
class PretrainedDir:
    """A checked ``save_pretrained`` directory: its config, weights, model class and inputs."""

    path: Path
    config: dict[str, Any]
    weights: tuple[str, ...]
    """The weight files present, relative to the directory (shards included)."""
    architecture: str
    """The Transformers class to load (``BertForSequenceClassification``), or an Auto class for --task."""
    modality: str

    @property
    def files(self) -> tuple[str, ...]:
        """Everything loading needs: the config and the weights (copied into the output folder)."""
        extra = tuple(n for n in ("generation_config.json",) if (self.path / n).is_file())
        return (CONFIG, *self.weights, *extra)


def read_pretrained(path: Path, *, task: str | None = None, trust_code: bool = False) -> PretrainedDir:
    """Read and check `path`'s config.json; an InputError names the file and the fix."""
    config_path = path / CONFIG
    where = f"{config_path}"
    if config_path.stat().st_size > _CONFIG_LIMIT:
        raise InputError(f"{where}: larger than any Transformers config; not a model folder")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{where}: not valid JSON ({exc}); save the model again with save_pretrained") from exc
    if not isinstance(config, dict):
        raise InputError(f"{where}: not a Transformers config (a JSON object); save the model again with save_pretrained")
    if config.get("auto_map") and not trust_code:
        raise InputError(f"{where}: the config's auto_map loads Python code shipped with the model "
                         "(trust_remote_code); bridge runs it only with --trust-code")
    weights = _weights(path)
    if not weights:
        raise InputError(f"{path}: a config.json but no weights (model.safetensors or pytorch_model.bin); "
                         "save the model with save_pretrained, which writes both")
    if task is not None:
        if task not in TASKS:
            raise InputError(f"--task {task}: use one of {', '.join(TASKS)}")
        architecture = TASKS[task]
    else:
        names = config.get("architectures")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise InputError(f"{where}: no 'architectures' list to choose the model class from; "
                             f"give --task ({', '.join(TASKS)})")
        architecture = names[0]
    if not architecture.replace("_", "").isalnum():
        raise InputError(f"{where}: architecture {architecture[:80]!r} is not a class name")
    return PretrainedDir(path, config, weights, architecture, modality(config))


def _weights(path: Path) -> tuple[str, ...]:
    for name in WEIGHTS:
        if not (path / name).is_file():
            continue
        if not name.endswith(".index.json"):
            return (name,)
        try:
            index = json.loads((path / name).read_text(encoding="utf-8"))
            shards = sorted(set(index["weight_map"].values()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"{path / name}: not a weight index ({exc}); save the model again") from exc
        for shard in shards:
            if not isinstance(shard, str) or "/" in shard or "\\" in shard or shard.startswith("."):
                raise InputError(f"{path / name}: names a shard {str(shard)[:80]!r} outside the folder; refusing it")
            if not (path / shard).is_file():
                raise InputError(f"{path / name}: names the shard {shard}, which is missing; copy the whole folder")
        return (name, *shards)
    return ()


def modality(config: dict[str, Any]) -> str:
    """``vision`` when the config describes images (``image_size`` and ``num_channels``), else ``text``."""
    return VISION if "image_size" in config and "num_channels" in config else TEXT


def _positive(config: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def input_specs(pretrained: PretrainedDir | dict[str, Any], *, seq_len: int | None = None,
                image_size: int | None = None, batch: int = 1) -> tuple[TensorSpec, ...]:
    """The inputs a model of this config takes: token ids, mask (and token types) for text, pixels for vision."""
    config = pretrained.config if isinstance(pretrained, PretrainedDir) else pretrained
    if modality(config) == VISION:
        size = image_size or _image_size(config) or DEFAULT_IMAGE_SIZE
        channels = _positive(config, "num_channels") or 3
        return (TensorSpec("pixel_values", (batch, channels, size, size), "float32"),)
    limit = _positive(config, "max_position_embeddings", "n_positions", "max_seq_len")
    length = seq_len or min(DEFAULT_SEQ_LEN, limit or DEFAULT_SEQ_LEN)
    if limit is not None and length > limit:
        raise InputError(f"--seq-len {length}: the model takes at most {limit} positions")
    specs = [TensorSpec("input_ids", (batch, length), "int64"), TensorSpec("attention_mask", (batch, length), "int64")]
    if _positive(config, "type_vocab_size"):
        specs.append(TensorSpec("token_type_ids", (batch, length), "int64"))
    return tuple(specs)


def _image_size(config: dict[str, Any]) -> int | None:
    value = config.get("image_size")
    if isinstance(value, list) and value and isinstance(value[0], int):
        return int(value[0])
    return _positive(config, "image_size")


def int_highs(config: dict[str, Any]) -> dict[str, int]:
    """Exclusive bounds of the integer inputs: token ids below the vocabulary, token types below their count."""
    highs = {}
    vocab = _positive(config, "vocab_size")
    if vocab:
        highs["input_ids"] = vocab
    types = _positive(config, "type_vocab_size")
    if types:
        highs["token_type_ids"] = types
    return highs


EAGER_PRETRAINED = "pretrained:"
"""verify's eager source for a Hugging Face folder: ``pretrained:TASK:CACHE:DIRECTORY`` (TASK may be empty; CACHE is
``kv`` when the program returns the key/value cache, else empty)."""


def eager_reference(directory: Path, task: str | None, kv_cache: bool = False) -> str:
    return f"{EAGER_PRETRAINED}{task or ''}:{'kv' if kv_cache else ''}:{directory}"


def parse_eager_reference(reference: str) -> tuple[Path, str | None, bool]:
    task, _, rest = reference.removeprefix(EAGER_PRETRAINED).partition(":")
    cache, _, directory = rest.partition(":")
    return Path(directory), task or None, cache == "kv"
