"""Read an ExportedProgram's (.pt2) input and output signature straight from its JSON.

A ``.pt2`` is a zip archive whose ``<root>/models/model.json`` holds the serialized graph
signature and tensor metadata (torch/_export/serde/schema.py). Reading it costs milliseconds,
where importing torch and deserializing the program in a child costs seconds; it runs no code
and imports no framework. Anything unexpected returns None, and the caller loads the program.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

from bridge import safety
from bridge.signature import Dim, Signature, TensorSpec

# torch._export.serde.schema.ScalarType -> numpy dtype names.
_SCALAR_TYPES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float16", 7: "float32",
                 8: "float64", 12: "bool", 13: "bfloat16"}


_SYMBOL = re.compile(r"^Symbol\('([^']+)'")


def _dim(size: dict[str, Any]) -> Dim:
    if "as_int" in size:
        return int(size["as_int"])
    expr = str(size["as_expr"]["expr_str"])  # sympy srepr: "Symbol('s77', positive=True, integer=True)"
    match = _SYMBOL.match(expr)
    return match.group(1) if match else expr


def _tensor(graph: dict[str, Any], spec: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]] | None:
    arg = spec.get(kind, {}).get("arg", {})
    name = arg.get("as_tensor", {}).get("name")
    return (name, graph["tensor_values"][name]) if name in graph.get("tensor_values", {}) else None


def _output_names(graph_module: dict[str, Any], count: int) -> list[str]:
    """The dict keys when the program returns a dict of tensors (the root call's serialized out_spec), else ``output_i``.

    The same rule as bridge.runtimes.torch_runner.program_output_names, read from the JSON.
    """
    default = [f"output_{i}" for i in range(count)]
    root = next((m for m in graph_module.get("module_call_graph", []) if m.get("fqn") == ""), None)
    text = ((root or {}).get("signature") or {}).get("out_spec")
    if not isinstance(text, str):
        return default
    spec = json.loads(text)
    node = spec[1] if isinstance(spec, list) and len(spec) == 2 else None
    if not isinstance(node, dict) or node.get("type") != "builtins.dict":
        return default
    keys = json.loads(node.get("context") or "null")
    children = node.get("children_spec") or []
    if not isinstance(keys, list) or len(keys) != count or len(children) != count \
            or any(child.get("type") is not None for child in children):
        return default
    return [str(key) for key in keys]


def read_signature(path: Path) -> Signature | None:
    """The user inputs and outputs of the ExportedProgram at `path`, or None when unsure."""
    safety.check_archive(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/models/model.json")]
            if len(names) != 1:
                return None
            program = json.loads(archive.read(names[0]))
        graph_module = program["graph_module"]
        graph, signature = graph_module["graph"], graph_module["signature"]
        inputs, outputs = [], []
        for spec in signature["input_specs"]:
            if "user_input" not in spec:
                continue  # parameters, buffers, constants
            found = _tensor(graph, spec, "user_input")
            if found is None:
                return None
            name, meta = found
            inputs.append(TensorSpec(name, tuple(_dim(s) for s in meta["sizes"]), _SCALAR_TYPES[meta["dtype"]]))
        user_outputs = [s for s in signature["output_specs"] if "user_output" in s]
        names = _output_names(graph_module, len(user_outputs))
        for name, spec in zip(names, user_outputs, strict=True):
            found = _tensor(graph, spec, "user_output")
            if found is None:
                return None
            _, meta = found
            outputs.append(TensorSpec(name, tuple(_dim(s) for s in meta["sizes"]), _SCALAR_TYPES[meta["dtype"]]))
    except (KeyError, TypeError, ValueError, zipfile.BadZipFile):
        return None
    return Signature(tuple(inputs), tuple(outputs)) if inputs and outputs else None
