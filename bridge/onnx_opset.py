"""ONNX files from outside the opsets the hops read: lifted or lowered with ``onnx.version_converter``, and checked.

onnxruntime implements no kernel below opset 7 (``AveragePool(1)``: "Could not find an
implementation"), and neither onnx2tf nor onnx2torch reads such files; ONNX's own version
converter has an adapter for every change since opset 1. An ONNX source whose default-domain opset
is below `defaults.MIN_SOURCE_OPSET` is converted to `defaults.ONNX_OPSET` (the opset the hops
prefer) before anything else reads it, and the result is checked against the original: the
original runs in ONNX's reference evaluator (``onnx.reference``, which implements the old
versions of the ops), the upgraded model in onnxruntime, on generated inputs. An upgrade that
changes the numbers is refused. The step is recorded in the manifest (``source.upgrade``).

Downwards the same: onnx2torch has converters only up to each op's opset-18 form (``Reshape``
at opset 19 is "not implemented"), so a source above `defaults.ONNX_OPSET` is lowered to it,
checked in onnxruntime against the original. An op with no form at opset 18 (``Gelu``, new in
20) cannot be lowered: the source is kept as it is, and the warning names the op (onnx2tf reads
newer opsets; onnx2torch then names it too).

Ops of a custom domain (onnxruntime's ``com.microsoft`` contrib ops and the like) are refused
here by name: no converter reads them.

This runs in a child process (bridge.isolation, `OpsetUpgradeRequest`): the file is a stranger's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from bridge import defaults
from bridge.errors import InputError
from bridge.manifest import OpsetUpgrade
from bridge.messages import OpsetUpgradeRequest, OpsetUpgradeResponse

STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training")
"""ONNX's own domains; any other is a custom domain (``com.microsoft``, ``org.pytorch.aten``...)."""


def default_opset(model: Any) -> int:
    """The opset of the default ONNX domain ('' or ``ai.onnx``); 0 when the model imports none (only ``ai.onnx.ml`` ops)."""
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def upgrade(request: OpsetUpgradeRequest) -> OpsetUpgradeResponse:
    """Lift `request.path` to `request.target` when its opset is below `defaults.MIN_SOURCE_OPSET`; check it."""
    import onnx

    from bridge.safety import check_onnx_external_data

    path = request.path
    try:
        model = onnx.load(str(path), load_external_data=False) if path.stat().st_size else None
    except Exception:  # noqa: BLE001 - protobuf raises several types for damaged files
        model = None
    if model is None or not model.graph.node:
        # Empty, damaged, not ONNX: not this step's to judge; loading it next refuses it with the usual message.
        return OpsetUpgradeResponse(None)
    custom = custom_domain_ops(model)
    if custom:
        domain, ops = next(iter(custom.items()))
        others = f" (and ops of {', '.join(list(custom)[1:])})" if len(custom) > 1 else ""
        raise InputError(f"{path}: {', '.join(ops[:5])} {'is' if len(ops) == 1 else 'are'} from the custom domain "
                         f"{domain!r}{others}, not standard ONNX: no converter reads them; export the model again without "
                         f"them (an onnxruntime-optimized file: the model before optimization)")
    opset = default_opset(model)
    if opset == 0:  # no op of ONNX's default domain: nothing to lift or lower
        return OpsetUpgradeResponse(None)
    if opset > onnx.defs.onnx_opset_version():  # newer than this onnx knows: the loader refuses it with the usual message
        return OpsetUpgradeResponse(None)
    if opset > request.target:
        return _lower(model, path, opset, request)
    if opset >= defaults.MIN_SOURCE_OPSET:
        return OpsetUpgradeResponse(None)
    check_onnx_external_data(model, path)
    onnx.load_external_data_for_model(model, str(path.parent))
    import onnx.version_converter

    unknown = _not_in_opset(model, opset)
    if unknown:
        raise InputError(f"{path}: {', '.join(unknown[:5])} {'is' if len(unknown) == 1 else 'are'} not in ONNX opset "
                         f"{opset} (experimental or another tool's ops), so it cannot be upgraded; export it again "
                         f"with opset {defaults.MIN_SOURCE_OPSET} or later")
    notes = _channel_slopes(model)
    try:
        lifted = onnx.version_converter.convert_version(model, request.target)
        # The converter keeps the old IR version, under which every initializer must also be a graph input: an
        # input it turns into an initializer (Pad's pads at opset 11) then fails the checker.
        lifted.ir_version = max(lifted.ir_version, onnx.helper.find_min_ir_version_for(list(lifted.opset_import)))
        onnx.checker.check_model(lifted)
    except Exception as exc:  # noqa: BLE001 - the converter raises RuntimeError, the checker ValidationError
        raise InputError(f"{path}: opset {opset} cannot be upgraded to {request.target} ({_blocking(str(exc), model)}); "
                         f"export it again with opset {defaults.MIN_SOURCE_OPSET} or later") from exc
    feeds = _feeds(lifted)
    expected = _reference(model, feeds, path, opset)
    actual = _onnxruntime(lifted, feeds, path, request.target, lifted=True)
    worst = _compare(expected, actual, path, f"upgrading opset {opset} to {request.target}",
                     "ONNX's reference evaluator", f"opset {defaults.MIN_SOURCE_OPSET} or later")
    onnx.save(lifted, str(request.out_path))
    return OpsetUpgradeResponse(OpsetUpgrade(opset, request.target, f"onnx.version_converter {onnx.__version__}",
                                             "onnx.reference against onnxruntime", round(worst, 9), notes=notes))


def custom_domain_ops(model: Any) -> dict[str, list[str]]:
    """Op types by domain, for nodes of a domain that is neither ONNX's nor one of the model's own functions."""
    local = {f.domain for f in model.functions}
    found: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.domain not in STANDARD_DOMAINS and node.domain not in local and node.op_type not in found.get(node.domain, []):
            found.setdefault(node.domain, []).append(node.op_type)
    return found


def _lower(model: Any, path: Path, opset: int, request: OpsetUpgradeRequest) -> OpsetUpgradeResponse:
    """Lower a source newer than the hops read to `request.target`, checked in onnxruntime; or keep it, saying why."""
    import onnx
    import onnx.version_converter

    from bridge.safety import check_onnx_external_data

    check_onnx_external_data(model, path)
    onnx.load_external_data_for_model(model, str(path.parent))
    try:
        lowered = onnx.version_converter.convert_version(model, request.target)
        onnx.checker.check_model(lowered)
    except Exception as exc:  # noqa: BLE001 - the converter raises RuntimeError, the checker ValidationError
        return OpsetUpgradeResponse(None, kept=f"opset {opset} kept: it cannot be lowered to {request.target} "
                                                f"({_blocking(str(exc), model)})")
    feeds = _feeds(model)
    try:
        expected = _onnxruntime(model, feeds, path, opset, lifted=False)
    except InputError as exc:
        return OpsetUpgradeResponse(None, kept=f"opset {opset} kept: onnxruntime cannot run the original to check a "
                                                f"lowered copy ({exc})")
    actual = _onnxruntime(lowered, feeds, path, request.target, lifted=True)
    worst = _compare(expected, actual, path, f"lowering opset {opset} to {request.target}", "onnxruntime",
                     f"opset {request.target}")
    onnx.save(lowered, str(request.out_path))
    return OpsetUpgradeResponse(OpsetUpgrade(opset, request.target, f"onnx.version_converter {onnx.__version__}",
                                             "onnxruntime on both", round(worst, 9)))


def _compare(expected: dict[str, Any], actual: dict[str, Any], path: Path, what: str, against: str, advice: str) -> float:
    """The largest difference between the original's outputs and the converted model's; a change beyond tolerance is refused."""
    worst = 0.0
    for name, e in expected.items():
        a = actual[name]
        if e.shape != a.shape:
            raise InputError(f"{path}: {what} changes output {name!r} from shape {list(e.shape)} to {list(a.shape)}; "
                             f"export it again with {advice}")
        if e.dtype.kind in "fiub" and e.size:
            both_nan = np.isnan(a.astype(np.float64)) & np.isnan(e.astype(np.float64))  # acos(2) is NaN in both: agreed
            diff = np.where(both_nan, 0.0, np.abs(a.astype(np.float64) - e.astype(np.float64)))
            bound = defaults.UPGRADE_TOLERANCE.atol + defaults.UPGRADE_TOLERANCE.rtol * np.abs(e.astype(np.float64))
            if not np.all(both_nan | (diff <= bound)):
                raise InputError(f"{path}: {what} changes output {name!r} (max abs {float(diff.max()):.3g} against "
                                 f"{against} on the original); export it again with {advice}")
            worst = max(worst, float(diff.max()))
    return worst


def _not_in_opset(model: Any, opset: int) -> list[str]:
    """Default-domain op types that ONNX's schemas do not define at `opset` (the converter fails on them unnamed)."""
    import onnx

    missing = []
    for op in dict.fromkeys(n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")):
        try:
            onnx.defs.get_schema(op, opset, "")
        except onnx.defs.SchemaError:
            missing.append(f"op {op}")
    return missing


def _channel_slopes(model: Any) -> tuple[str, ...]:
    """Before opset 7, PRelu's slope of shape [C] applied along the channel axis (axis 1); from 7 on it broadcasts
    like numpy, from the last axis. The version converter has no adapter for it: a [C] slope initializer of a PRelu
    on a tensor of rank r > 2 is stored as [C, 1, ...] (r - 2 ones), which means the same at every opset."""
    import onnx
    from onnx import numpy_helper

    shapes = {v.name: len(v.type.tensor_type.shape.dim)
              for v in (*onnx.shape_inference.infer_shapes(model).graph.value_info, *model.graph.input)}
    constants = {i.name: i for i in model.graph.initializer}
    changed = []
    for node in model.graph.node:
        if node.op_type != "PRelu" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        slope = numpy_helper.to_array(constants[node.input[1]])
        rank = shapes.get(node.input[0], 0)
        if slope.ndim == 1 and slope.size > 1 and rank > 2:
            shaped = slope.reshape(slope.size, *([1] * (rank - 2)))
            constants[node.input[1]].CopyFrom(numpy_helper.from_array(shaped, node.input[1]))
            for value in model.graph.input:  # before IR 4 an initializer is also listed as a graph input
                if value.name == node.input[1]:
                    del value.type.tensor_type.shape.dim[:]
                    for size in shaped.shape:
                        value.type.tensor_type.shape.dim.add().dim_value = int(size)
            changed.append(f"PRelu {node.name or node.output[0]}: slope [{slope.size}] stored as "
                           f"[{slope.size}{', 1' * (rank - 2)}] (channel axis, as before opset 7)")
    return tuple(changed)


def _blocking(message: str, model: Any) -> str:
    """The op the converter names (``No Adapter For Upsample``), or the first line of its message."""
    ops = {node.op_type for node in model.graph.node}
    named = [op for op in sorted(ops, key=len, reverse=True) if re.search(rf"\b{re.escape(op)}\b", message)]
    first = message.strip().splitlines()[0][:200] if message.strip() else "no message"
    return f"op {named[0]} blocks it: {first}" if named else first


def _feeds(model: Any) -> dict[str, np.ndarray[Any, Any]]:
    """Seeded inputs for the graph's inputs (initializers excluded): floats standard normal, integers 0 or 1."""
    from onnx import helper

    rng = np.random.default_rng(defaults.CHECK_SEED)
    constants = {i.name for i in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in constants:
            continue
        kind = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in kind.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(kind.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(dims).astype(dtype)
        elif dtype == np.bool_:
            feeds[value.name] = rng.integers(0, 2, dims).astype(bool)
        else:
            feeds[value.name] = rng.integers(0, defaults.CHECK_INT_HIGH, dims).astype(dtype)
    return feeds


def _reference(model: Any, feeds: dict[str, Any], path: Path, opset: int) -> dict[str, np.ndarray[Any, Any]]:
    from onnx.reference import ReferenceEvaluator

    try:
        outputs = ReferenceEvaluator(model).run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - the evaluator raises per op
        reason = " ".join(str(exc).split())[:200]
        raise InputError(f"{path}: opset {opset} is older than onnxruntime runs, and ONNX's reference evaluator cannot "
                         f"run it to check an upgrade ({type(exc).__name__}: {reason}); export it again with opset "
                         f"{defaults.MIN_SOURCE_OPSET} or later") from exc
    return {o.name: np.asarray(v) for o, v in zip(model.graph.output, outputs, strict=True)}


def _onnxruntime(model: Any, feeds: dict[str, Any], path: Path, opset: int, *, lifted: bool) -> dict[str, np.ndarray[Any, Any]]:
    """`model`'s outputs in onnxruntime; `lifted`: it is the converted copy (at `opset`), else the user's original."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        outputs = session.run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        message = " ".join(str(exc).split())
        op = re.search(r"running (\w+) node", message)
        reason = f"op {op.group(1)} fails: {message[:160]}" if op else message[:200]
        what = f"converted to opset {opset} with onnx.version_converter, " if lifted else f"at opset {opset}, "
        raise InputError(f"{path}: {what}onnxruntime cannot run it ({reason}); export it again with opset "
                         f"{defaults.ONNX_OPSET}") from exc
    return {o.name: np.asarray(v) for o, v in zip(model.graph.output, outputs, strict=True)}
