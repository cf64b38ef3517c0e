"""The walk in the parent's graph order: the first operation whose output leaves tolerance while its inputs
are within it, and the operations that add the most drift.

A parent tensor the child has no counterpart for (fused into a larger op, or never materialised)
is not a verdict: it takes the drift of the nearest compared tensors above it. So does a tensor
that fails while a tensor computed from it passes: the child evidently computed it right, in a
form the join could not see (a different rounding of a value the next op absorbs, or a value-joined
tensor matched to the wrong neighbour).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bridge.localization.graph import CapturedGraph, GraphNode
from bridge.localization.join import Measure
from bridge.localization.result import OpDrift

_TARGET_OPS = 12
_FUSED = 8


def ancestors(graph: CapturedGraph, tensors: Sequence[str]) -> set[str]:
    """Names of the nodes that `tensors` depend on (their backward cone)."""
    producers = graph.producers()
    seen: set[str] = set()
    stack = [producers[t] for t in tensors if t in producers]
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        stack.extend(producers[t] for t in node.inputs if t in producers)
    return seen


def target_ops(child: CapturedGraph, target: str, stop: set[str],
               producers: dict[str, GraphNode] | None = None) -> tuple[str, ...]:
    """The child's ops that compute `target` from the tensors in `stop` (the ones joined to what passed).

    `producers` is ``child.producers()`` when the caller already has it.
    """
    producers = producers if producers is not None else child.producers()
    found: list[str] = []
    stack = [target]
    seen: set[str] = set()
    while stack and len(found) < _TARGET_OPS:
        tensor = stack.pop()
        node = producers.get(tensor)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        found.append(node.name)
        stack.extend(t for t in node.inputs if t not in stop)
    return tuple(reversed(found))


class Walk:
    """The verdict on every parent tensor, and what follows from it."""

    def __init__(self, parent: CapturedGraph, nodes: Sequence[GraphNode], results: Mapping[str, Measure | None]) -> None:
        self.parent = parent
        self.producers = parent.producers()
        """Parent tensor -> the node that makes it, built once for the whole walk."""
        self._child_producers: dict[int, dict[str, GraphNode]] = {}
        self.nodes = list(nodes)
        self.results = results
        consumers: dict[str, list[GraphNode]] = {}
        for node in self.nodes:
            for tensor in node.inputs:
                consumers.setdefault(tensor, []).append(node)
        # Reverse graph order: does any tensor computed from this one pass?
        self.passing_below: dict[str, bool] = {}
        for node in reversed(self.nodes):
            for tensor in node.outputs:
                self.passing_below[tensor] = any(
                    self._passes(out) or self.passing_below.get(out, False)
                    for consumer in consumers.get(tensor, ()) for out in consumer.outputs)
        self.effective: dict[str, float] = {}
        for tensor in parent.inputs:
            measured = results.get(tensor)
            self.effective[tensor] = measured.over if measured is not None else 0.0
        for node in self.nodes:
            carried = self.inputs_over(node)
            for tensor in node.outputs:
                measured = results.get(tensor)
                self.effective[tensor] = measured.over if measured is not None and self.decided(tensor) else carried

    def _passes(self, tensor: str) -> bool:
        measured = self.results.get(tensor)
        return measured is not None and measured.over <= 1.0

    def decided(self, tensor: str) -> bool:
        """Compared, and either within tolerance or over it with nothing below it passing."""
        measured = self.results.get(tensor)
        return measured is not None and (measured.over <= 1.0 or not self.passing_below.get(tensor, False))

    def fails(self, tensor: str) -> bool:
        measured = self.results.get(tensor)
        return measured is not None and measured.over > 1.0 and self.decided(tensor)

    def inputs_over(self, node: GraphNode) -> float:
        return max((self.effective.get(t, 0.0) for t in node.inputs), default=0.0)

    def failing(self) -> list[GraphNode]:
        return [node for node in self.nodes if any(self.fails(t) for t in node.outputs)]

    def first(self) -> GraphNode | None:
        failing = self.failing()
        return next((node for node in failing if self.inputs_over(node) <= 1.0), failing[0] if failing else None)

    def fused_with(self, node: GraphNode) -> tuple[str, ...]:
        """The parent ops above `node` with no decided tensor between them and the last compared ones."""
        producers = self.producers
        found: list[str] = []
        stack = [t for t in node.inputs if not self.decided(t)]
        seen: set[str] = set()
        while stack and len(found) < _FUSED:
            producer = producers.get(stack.pop())
            if producer is None or producer.name in seen:
                continue
            seen.add(producer.name)
            found.append(producer.name)
            stack.extend(t for t in producer.inputs if not self.decided(t))
        return tuple(reversed(found))

    def drift(self, node: GraphNode, child: CapturedGraph, passed_targets: set[str], with_fused: bool = False) -> OpDrift:
        tensor = next((t for t in node.outputs if self.fails(t)), next((t for t in node.outputs if t in self.results),
                                                                         node.outputs[0] if node.outputs else ""))
        measured = self.results.get(tensor)
        inputs = self.inputs_over(node) if node.inputs else None
        return OpDrift(
            node=node.name, op=node.op, tensor=tensor, target=measured.target if measured else "",
            target_ops=target_ops(child, measured.target, passed_targets,
                                  self._child_producers.setdefault(id(child), child.producers())) if measured else (),
            max_abs=_finite(measured.max_abs) if measured else None, max_rel=_finite(measured.max_rel) if measured else None,
            over=_finite(measured.over) if measured else None, inputs_over=_finite(inputs) if inputs is not None else None,
            passed=measured is not None and measured.over <= 1.0, layout=measured.layout if measured else "",
            source=node.source, fused=self.fused_with(node) if with_fused else (),
        )

    def top(self, count: int) -> list[GraphNode]:
        """The `count` operations that add the most drift over their inputs, in graph order."""
        added = []
        for index, node in enumerate(self.failing()):
            over = max(self.results[t].over for t in node.outputs if self.fails(t))  # type: ignore[union-attr]
            if over > self.inputs_over(node):  # an op that only carries its inputs' drift adds nothing
                added.append((over - self.inputs_over(node), index, node))
        chosen = sorted(added, key=lambda item: -item[0] if item[0] == item[0] else 0.0)[:count]
        return [node for _, _, node in sorted(chosen, key=lambda item: item[1])]


def _finite(value: float) -> float | None:
    return value if value == value and value not in (float("inf"), float("-inf")) else None
