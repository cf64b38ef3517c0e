"""What localisation finds for one hop: the first operation that diverges, and the largest drifts.

`Localization` is a record (bridge.records), written into the JSON report's ``localization``
section, rendered in the terminal and in the Markdown report. Figures that are not finite are
written as None.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.localization.graph import SourceRef

AGREES, DIVERGES, NOT_LOCALISED = "agrees", "diverges", "not localised"
BY_NAMES, BY_VALUES, BY_BISECTION = "names", "values", "bisection"


@dataclass(frozen=True)
class OpDrift:
    """One parent operation's output against the matching tensor of the child."""

    node: str
    op: str
    tensor: str
    """The parent tensor compared."""
    target: str
    """The child tensor it was compared with ('' when it has none)."""
    target_ops: tuple[str, ...]
    """The child's operations that compute it from the tensors joined to this operation's inputs (``CONV_2D#12``)."""
    max_abs: float | None
    max_rel: float | None
    over: float | None
    """How far over tolerance: max over elements of ``|a - e| / (atol + rtol * |e|)``; above 1 fails."""
    inputs_over: float | None
    """The same figure for this operation's inputs (the largest); below 1 means its inputs were within tolerance."""
    passed: bool
    layout: str = ""
    """How the child tensor was brought to the parent's layout: ``same``, ``channels-last``, ``reshaped``, ``dequantised``."""
    source: SourceRef | None = None
    fused: tuple[str, ...] = ()
    """Parent operations between the last compared tensors and this one, which the child computes without a
    tensor to compare (fused): the divergence may be in any of them."""

    def describe(self) -> str:
        where = self.source.describe() if self.source else ""
        figure = f"max abs {self.max_abs:.3g}" if self.max_abs is not None else "no comparable tensor"
        over = f", {self.over:.3g}x tolerance" if self.over is not None else ""
        inputs = (f"; its inputs {self.inputs_over:.2g}x" if self.inputs_over is not None else "")
        target = f" -> {self.target}" if self.target else ""
        ops = f" [{', '.join(self.target_ops[:6])}{', ...' if len(self.target_ops) > 6 else ''}]" if self.target_ops else ""
        fused = f" (computed together with {', '.join(self.fused[:4])})" if self.fused else ""
        return f"{self.op} {self.node}{fused}{' in ' + where if where else ''}: {self.tensor}{target}{ops} {figure}{over}{inputs}"


@dataclass(frozen=True)
class Localization:
    """Where one hop diverges, in its parent's graph order."""

    hop: str
    """``PARENT -> CHILD`` with the folder's keys (``source -> onnx``)."""
    formats: str
    """``torch->onnx``."""
    candidate: str
    status: str
    """``agrees`` (nothing over tolerance), ``diverges`` (the first divergent operation is named, or the reason it
    cannot be), ``not localised`` (the hop diverges but neither a join nor a bisection could say where)."""
    method: str
    """How the tensors were joined: ``names`` (recorded names), ``values`` (no names: each parent tensor against
    the closest child tensor of a compatible shape), ``bisection`` (the parent cut and converted again), or ''."""
    sample: int
    output: str | None
    """The one output localised (``--output``), or None for all."""
    first: OpDrift | None
    top: tuple[OpDrift, ...]
    """The operations that add the most drift, in graph order."""
    outputs: tuple[OpDrift, ...]
    """The graph outputs on this sample."""
    compared: int
    """Parent tensors compared with a child tensor."""
    nodes: int
    """Parent operations walked."""
    atol: float
    rtol: float
    seconds: float
    steps: int = 0
    """Bisection steps taken."""
    reason: str = ""
    """Why nothing was named, or what limits the answer."""
    notes: tuple[str, ...] = ()

    @property
    def diverges(self) -> bool:
        return self.status != AGREES

    def summary(self) -> str:
        """One line for the terminal."""
        if self.status == AGREES:
            if self.reason:
                return f"{self.hop}: {self.reason}"
            compared = f" ({self.compared} tensors compared)" if self.compared else ""
            return f"{self.hop}: nothing diverges: within tolerance on sample {self.sample}{compared}"
        if self.first is None:
            return f"{self.hop}: not localised: {self.reason}"
        return f"{self.hop}: first divergent op {self.first.describe()} (joined by {self.method})"

    def lines(self) -> list[str]:
        """The terminal rendering: the summary, then the top operations."""
        out = [self.summary()]
        if self.reason and self.first is not None:
            out.append(f"  note: {self.reason}")
        for note in self.notes:
            out.append(f"  note: {note}")
        if self.top:
            out.append(f"  largest drift added (graph order, tolerance atol {self.atol:g} rtol {self.rtol:g}):")
            out += [f"    {'*' if self.first and op.node == self.first.node else ' '} {op.describe()}" for op in self.top]
        out.append(f"  {self.compared} tensors compared over {self.nodes} operations in {self.seconds:.1f} s"
                   + (f", {self.steps} bisection steps" if self.steps else ""))
        return out

    def to_markdown(self) -> str:
        lines = [f"#### {self.hop} ({self.formats}, {self.candidate or 'default'}): {self.status}", ""]
        if self.first is not None:
            source = self.first.source
            lines.append(f"First divergent operation: **{self.first.op} `{self.first.node}`**"
                         + (f" in `{source.module}`" if source and source.module else "")
                         + (f" at `{source.location}`" if source and source.location else ""))
            if source and source.code:
                lines += ["", f"    {source.code}"]
            lines.append("")
        elif self.reason:
            lines += [self.reason, ""]
        if self.top:
            lines += ["| op | node | source | target | max abs | x tolerance | inputs x tolerance |",
                      "|---|---|---|---|---|---|---|"]
            for op in self.top:
                src = op.source.describe() if op.source else ""
                lines.append(f"| {op.op} | `{op.node}` | {src} | {', '.join(op.target_ops[:4]) or op.target} | "
                             f"{_num(op.max_abs)} | {_num(op.over)} | {_num(op.inputs_over)} |")
            lines.append("")
        lines.append(f"Joined by {self.method or '-'}; {self.compared} tensors compared over {self.nodes} operations "
                     f"on sample {self.sample} in {self.seconds:.1f} s.")
        return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
