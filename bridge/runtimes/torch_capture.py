"""PyTorch capture for localisation: one interpreter pass over an ExportedProgram keeping each node's output.

Asked for the dynamo exporter's names (the child ONNX was made by ``torch.onnx.export(dynamo=True)``),
the program is exported again the same way and the pass runs over the program the exporter
lowered: its FX node names are the ONNX value names, so the two graphs join by name. Each node
carries its module path (``nn_module_stack``) and the user's source line (``stack_trace``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge import defaults
from bridge.errors import InputError
from bridge.localization.graph import CapturedGraph, GraphNode, SourceRef, TensorStore, user_frame
from bridge.runtimes.torch_runner import flatten_outputs, load_module

if TYPE_CHECKING:
    from bridge.messages import CaptureRequest


def _source(node: Any) -> SourceRef | None:
    stack = node.meta.get("nn_module_stack") or {}
    module, module_class = ("", "")
    if stack:
        module, module_class = list(stack.values())[-1]
        module_class = module_class if isinstance(module_class, str) else getattr(module_class, "__qualname__", "")
    location, code = user_frame(node.meta.get("stack_trace") or "")
    if not (module or location):
        return None
    return SourceRef(str(module), str(module_class), location, code)


def _op(node: Any) -> str:
    target = node.target
    name = getattr(target, "__name__", None) or str(target)
    return str(target).removesuffix(".default") if "aten" in str(target) else name


def capture(request: CaptureRequest, feeds: dict[str, Any], store: TensorStore,
            history: list[dict[str, Any]]) -> CapturedGraph:
    """`history` is not replayed: this runtime keeps no state between calls."""
    import torch
    import torch.fx

    module, kind, program = load_module(request.path, trust_pickle=request.trust_pickle)
    if program is None:
        raise InputError(f"{request.path}: a {kind} file has no graph of named operations to capture; "
                         "save the model with torch.export.save (.pt2) to localise its hops")
    if request.names in ("dynamo", "dynamo-decomposed"):
        if request.names == "dynamo-decomposed":
            program = program.run_decompositions()
        onnx_program = torch.onnx.export(program, (), dynamo=True, opset_version=defaults.ONNX_OPSET, verbose=False)
        assert onnx_program is not None
        program = onnx_program.exported_program
        del onnx_program
    graph_module = program.module()
    user_inputs = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
    input_names = [spec.name for spec in request.input_specs] if request.input_specs else list(feeds)
    if len(user_inputs) != len(input_names):
        raise InputError(f"{request.path}: the program takes {len(user_inputs)} inputs, the signature names {len(input_names)}")
    args = [torch.from_numpy(feeds[name]) for name in input_names]
    live: dict[str, str] = {}
    """FX node name -> the tensor name it is stored under (placeholders: the signature's input names)."""
    nodes: list[GraphNode] = []
    producers: dict[str, Any] = {}

    class Keeper(torch.fx.Interpreter):  # type: ignore[misc]
        def run_node(self, node: Any) -> Any:
            result = super().run_node(node)
            if node.op == "placeholder":
                name = input_names[user_inputs.index(node)]
                live[node.name] = name
                store.put(name, result.detach().numpy())
            elif node.op == "call_function":
                if any(a.name in live for a in node.all_input_nodes):
                    reads = [live[a.name] for a in node.all_input_nodes if live.get(a.name)]
                    producers[node.name] = node
                    if isinstance(result, torch.Tensor):
                        live[node.name] = node.name
                        store.put(node.name, result.detach().float().numpy() if result.dtype == torch.bfloat16
                                  else result.detach().numpy())
                        origin, name = node, node.name
                        if "getitem" in str(node.target) and node.args and node.args[0].name in producers:
                            origin = producers[node.args[0].name]  # a tuple's element: name the op that made it
                            name = f"{origin.name}[{node.args[1]}]"
                            reads = [live[a.name] for a in origin.all_input_nodes if live.get(a.name)]
                        nodes.append(GraphNode(name, _op(origin), tuple(reads), (node.name,), _source(origin)))
                    elif isinstance(result, (tuple, list)):
                        live[node.name] = ""  # its elements are kept by the getitem nodes that read them
            return result

    with torch.no_grad():
        result = Keeper(graph_module).run(*args)
    output_node = next(n for n in graph_module.graph.nodes if n.op == "output")
    leaves = flatten_outputs(output_node.args[0])
    outputs = []
    for i, (leaf, value) in enumerate(zip(leaves, flatten_outputs(result), strict=False)):
        name = live.get(getattr(leaf, "name", ""), "") or f"output_{i}"
        store.put(name, value.detach().numpy() if isinstance(value, torch.Tensor) else value)
        outputs.append(name)
    return CapturedGraph(tuple(nodes), tuple(input_names), tuple(outputs), dict(store.keys))
