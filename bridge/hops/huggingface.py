"""Load a Hugging Face Transformers model and save it as an ExportedProgram with its inputs and outputs named.

Runs in a child process (the source layer's materialize step) or in the caller's process for a
live `PreTrainedModel`. Loading is offline (``local_files_only``, ``HF_HUB_OFFLINE``): bridge never
downloads. The model is wrapped so that it takes its inputs positionally under their Transformers
names (``input_ids``, ``attention_mask``, ``token_type_ids``; ``pixel_values``) and returns a dict
of its tensor outputs under theirs (``logits``, ``last_hidden_state``, ``pooler_output``), with no
KV cache; ``torch.export`` then records both, and every artifact keeps them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bridge.errors import InputError
from bridge.formats import Format
from bridge.huggingface import PretrainedDir, input_specs, int_highs, read_pretrained
from bridge.inputs import ExampleInputs
from bridge.messages import HfExport, MaterializeResponse
from bridge.signature import TensorSpec


def is_pretrained_model(obj: Any) -> bool:
    """A Transformers `PreTrainedModel` (found by its class hierarchy: no transformers import)."""
    return any(c.__name__ == "PreTrainedModel" and c.__module__.startswith("transformers") for c in type(obj).__mro__)


def load_pretrained(pretrained: PretrainedDir, *, trust_code: bool = False, shown: Path | None = None) -> Any:
    """The model of a checked ``save_pretrained`` directory, in eval mode, weights checked against the config.

    `shown` is the folder the user named (messages name it, not bridge's copy).
    """
    where = shown or pretrained.path
    os.environ["HF_HUB_OFFLINE"] = "1"  # no hub request, whatever the config or the class asks for
    import transformers

    cls = getattr(transformers, pretrained.architecture, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise InputError(f"{where / 'config.json'}: unknown architecture {pretrained.architecture!r} "
                         f"(transformers {transformers.__version__} has no such class); give --task "
                         "or save it with a transformers release that has it")
    try:
        # Mismatched shapes are let through here only to be listed below: the load is then refused.
        model, info = cls.from_pretrained(str(pretrained.path), local_files_only=True, trust_remote_code=trust_code,
                                          output_loading_info=True, ignore_mismatched_sizes=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise InputError(f"{where}: Transformers cannot load it ({reason}); save the model again "
                         "with save_pretrained") from exc
    missing = [*(str(k) for k in info.get("missing_keys") or ()),
               *(" ".join(str(p) for p in k) if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys") or ())]
    if missing:
        raise InputError(f"{where}: the weights do not fit config.json ({len(missing)} tensors missing or of another "
                         f"shape, e.g. {missing[0][:160]}); save config and weights together with save_pretrained")
    return model.eval()


TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
"""The inputs whose dim 1 is the sequence (``--dynamic-seq``)."""


def wrap(model: Any, names: tuple[str, ...], kv_cache: bool = False) -> Any:
    """`model` taking `names` positionally and returning a dict of its tensor outputs.

    With `kv_cache` the key/value cache the model returns (``past_key_values``) is flattened into
    ``present.N.key`` and ``present.N.value``, layer by layer; without it no cache is made.
    """
    import torch

    if kv_cache and not getattr(model.config, "is_decoder", False) and "CausalLM" not in type(model).__name__ \
            and "LMHead" not in type(model).__name__:
        raise InputError(f"--kv-cache: {type(model).__name__} is not a causal language model; it has no key/value cache")
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = kv_cache  # no KV cache in the outputs unless asked for

    class Pretrained(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def run(self, **feeds: Any) -> dict[str, Any]:
            out = self.model(**feeds, return_dict=True, use_cache=kv_cache)
            found = {key: value for key, value in out.items() if isinstance(value, torch.Tensor)}
            if kv_cache:
                found.update(flatten_cache(out.get("past_key_values")))
            return found

    class Text(Pretrained):
        def forward(self, input_ids: Any, attention_mask: Any) -> dict[str, Any]:
            return self.run(input_ids=input_ids, attention_mask=attention_mask)

    class TextWithTypes(Pretrained):
        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> dict[str, Any]:
            return self.run(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)

    class Vision(Pretrained):
        def forward(self, pixel_values: Any) -> dict[str, Any]:
            return self.run(pixel_values=pixel_values)

    classes = {("input_ids", "attention_mask"): Text, ("input_ids", "attention_mask", "token_type_ids"): TextWithTypes,
               ("pixel_values",): Vision}
    if names not in classes:
        raise InputError(f"a Transformers model takes input_ids, attention_mask (token_type_ids) or pixel_values; "
                         f"got {', '.join(names)}")
    return classes[names]().eval()


def flatten_cache(cache: Any) -> dict[str, Any]:
    """``present.N.key`` / ``present.N.value`` for each layer of a Transformers cache (a Cache object or tuples)."""
    if cache is None:
        raise InputError("--kv-cache: the model returned no past_key_values")
    layers = getattr(cache, "layers", None)
    pairs = [(layer.keys, layer.values) for layer in layers] if layers is not None else [(k, v) for k, v, *_ in cache]
    flat: dict[str, Any] = {}
    for index, (key, value) in enumerate(pairs):
        flat[f"present.{index}.key"], flat[f"present.{index}.value"] = key, value
    return flat


def example_tensors(specs: tuple[TensorSpec, ...], config: dict[str, Any]) -> tuple[Any, ...]:
    """Inputs a model of `config` accepts: ids below the vocabulary, a mask with a padded tail, pixels."""
    import torch

    highs = int_highs(config)
    generator = torch.Generator().manual_seed(0)
    out = []
    for spec in specs:
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        if spec.name == "attention_mask":
            mask = torch.ones(shape, dtype=torch.int64)
            mask[..., max(1, shape[-1] * 3 // 4):] = 0
            out.append(mask)
        elif spec.dtype.startswith("int"):
            out.append(torch.randint(0, highs.get(spec.name, 2), shape, generator=generator, dtype=torch.int64))
        else:
            out.append(torch.randn(shape, generator=generator))
    return tuple(out)


def save_pretrained_program(model: Any, out_dir: Path, specs: ExampleInputs | None, dynamic_batch: bool,
                            note: str | None = None, file_name: str = "model.pt2", hf: HfExport | None = None) -> MaterializeResponse:
    """Export a Transformers model (live or loaded) to ``model.pt2`` with named inputs and outputs.

    With ``hf.dynamic_seq`` dim 1 of the text inputs is symbolic (a length from 2 to the model's
    positions); with ``hf.kv_cache`` the cache is among the outputs.
    """
    import torch

    hf = hf or HfExport()
    config = model.config.to_dict()
    chosen = specs.specs if specs is not None else input_specs(config)
    names = tuple(s.name for s in chosen)
    wrapped = wrap(model.eval(), names, kv_cache=hf.kv_cache)
    args = example_tensors(chosen, config)
    if hf.dynamic_seq and not set(names) & set(TEXT_INPUTS):
        raise InputError(f"--dynamic-seq: {type(model).__name__} takes {', '.join(names)}, which have no sequence axis")
    dynamic = None
    if dynamic_batch or hf.dynamic_seq:
        dynamic = tuple({**({0: torch.export.Dim.DYNAMIC} if dynamic_batch else {}),
                         **({1: torch.export.Dim.DYNAMIC} if hf.dynamic_seq and name in TEXT_INPUTS else {})}
                        for name in names)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        program = torch.export.export(wrapped, args, dynamic_shapes=dynamic)
    except Exception as exc:  # noqa: BLE001 - torch.export's many error types: the user gets one line
        reason = " ".join(str(exc).split())[:300]
        raise InputError(f"torch.export cannot capture {type(model).__name__} ({type(exc).__name__}: {reason})") from exc
    path = out_dir / file_name
    torch.export.save(program, str(path))
    return MaterializeResponse(path, Format.TORCH, "exported_program", ExampleInputs(chosen, origin="config.json"), note)


def materialize_dir(directory: Path, out_dir: Path, task: str | None, specs: ExampleInputs | None,
                    dynamic_batch: bool, trust_code: bool, shown: Path | None = None,
                    hf: HfExport | None = None) -> MaterializeResponse:
    """Load a ``save_pretrained`` directory and export it (the child step of the source layer)."""
    pretrained = read_pretrained(directory, task=task, trust_code=trust_code)
    model = load_pretrained(pretrained, trust_code=trust_code, shown=shown)
    note = f"Transformers {pretrained.architecture}, exported with its inputs and outputs named"
    try:
        return save_pretrained_program(model, out_dir, specs, dynamic_batch, note, hf=hf)
    except InputError as exc:  # name the folder the user gave
        raise InputError(f"{shown or directory}: {exc}") from exc


def load_eager(directory: Path, task: str | None, names: tuple[str, ...], trust_code: bool, kv_cache: bool = False) -> Any:
    """The Transformers model of a folder's copy, wrapped as it was exported (verify's eager source)."""
    pretrained = read_pretrained(directory, task=task, trust_code=trust_code)
    return wrap(load_pretrained(pretrained, trust_code=trust_code), names, kv_cache=kv_cache)
