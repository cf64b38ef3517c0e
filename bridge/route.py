"""Route planning: the shortest chain of hops between formats over a HopRegistry.

Shortest means fewest hops; ties go to the lower sum of hop preferences, then to the order the
hops were registered in. Several targets share one tree of routes, so each artifact is made once.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from bridge.errors import UnsupportedRouteError
from bridge.formats import Format
from bridge.options import parse_formats
from bridge.registry import DEFAULT_REGISTRY, HopRegistry, HopSpec


@dataclass(frozen=True)
class Route:
    """The hops from `source` to each target, in the order they run (parents before children)."""

    source: Format
    targets: tuple[Format, ...]
    hops: tuple[HopSpec, ...]

    @property
    def formats(self) -> tuple[Format, ...]:
        return (self.source, *(h.dst for h in self.hops))

    def describe(self) -> str:
        """``torch -> onnx -> tflite``; branches are listed per target."""
        return "; ".join(" -> ".join(f.value for f in self.path_to(t)) for t in self.targets)

    def path_to(self, target: Format) -> tuple[Format, ...]:
        by_dst = {h.dst: h for h in self.hops}
        path = [target]
        while path[-1] != self.source:
            path.append(by_dst[path[-1]].src)
        return tuple(reversed(path))


def _shortest_tree(registry: HopRegistry, source: Format) -> dict[Format, HopSpec]:
    """For every reachable format, the hop that reaches it on the best route from `source`."""
    order = {hop.name: i for i, hop in enumerate(registry)}
    best: dict[Format, tuple[int, int, tuple[int, ...]]] = {source: (0, 0, ())}
    parent: dict[Format, HopSpec] = {}
    queue: list[tuple[int, int, tuple[int, ...], str]] = [(0, 0, (), source.value)]
    while queue:
        hops, pref, tie, name = heapq.heappop(queue)
        fmt = Format(name)
        if best.get(fmt) != (hops, pref, tie):
            continue
        for hop in registry.from_format(fmt):
            cost = (hops + 1, pref + hop.preference, (*tie, order[hop.name]))
            if hop.dst not in best or cost < best[hop.dst]:
                best[hop.dst] = cost
                parent[hop.dst] = hop
                heapq.heappush(queue, (*cost, hop.dst.value))
    return parent


def plan(
    source: Format,
    targets: Sequence[Format],
    *,
    via: Sequence[Format] = (),
    registry: HopRegistry = DEFAULT_REGISTRY,
) -> Route:
    """The route from `source` to every target, or UnsupportedRouteError naming the gap.

    `via` forces a single chain ``source -> via... -> target`` (one target only).
    """
    targets = tuple(dict.fromkeys(t for t in targets if t != source))
    if not targets:
        raise UnsupportedRouteError(f"nothing to do: the model is already {source.value}")
    if via:
        if len(targets) != 1:
            raise UnsupportedRouteError("--via forces one chain: give a single --to format with it")
        chain = (source, *via, targets[0])
        hops: list[HopSpec] = []
        for src, dst in zip(chain, chain[1:], strict=False):
            hop = registry.get(src, dst)
            if hop is None:
                raise UnsupportedRouteError(
                    f"no hop {src.value} -> {dst.value} in the forced route "
                    f"{' -> '.join(f.value for f in chain)}; see `bridge formats` for the hops"
                )
            hops.append(hop)
        if len(set(chain)) != len(chain):
            raise UnsupportedRouteError(f"the forced route {' -> '.join(f.value for f in chain)} visits a format twice")
        return Route(source, targets, tuple(hops))

    parent = _shortest_tree(registry, source)
    needed: list[HopSpec] = []
    for target in targets:
        if target not in parent:
            raise UnsupportedRouteError(
                f"no route from {source.value} to {target.value}: no chain of hops joins them; "
                "see `bridge formats` for the hops"
            )
        fmt = target
        while fmt != source:
            hop = parent[fmt]
            if hop not in needed:
                needed.append(hop)
            fmt = hop.src
    # Parents before children: sort by depth in the tree, then by registry order.
    depth = {source: 0}
    for hop in sorted(needed, key=lambda h: len(_chain(parent, source, h.dst))):
        depth[hop.dst] = depth[hop.src] + 1
    order = {hop.name: i for i, hop in enumerate(registry)}
    ordered = tuple(sorted(needed, key=lambda h: (depth[h.dst], order[h.name])))
    return Route(source, targets, ordered)


def _chain(parent: dict[Format, HopSpec], source: Format, target: Format) -> list[HopSpec]:
    chain = []
    while target != source:
        chain.append(parent[target])
        target = parent[target].src
    return chain


def reachable(source: Format, registry: HopRegistry = DEFAULT_REGISTRY) -> tuple[Format, ...]:
    """Every format some route from `source` reaches, in Format order."""
    parent = _shortest_tree(registry, source)
    return tuple(f for f in Format if f in parent)


def parse_targets(to: str | Format | Sequence[str | Format], source: Format, registry: HopRegistry) -> tuple[Format, ...]:
    """``tflite``, ``onnx,tf``, ``all`` or a list of formats.

    ``all`` is every format the source reaches that `FormatSpec.in_all` includes; ``keras`` and ``tfjs`` are
    added by name (``all,tfjs``).
    """
    items = [to] if isinstance(to, (str, Format)) else list(to)
    named = [p.strip().lower() for i in items for p in (i.split(",") if isinstance(i, str) else [i.value])]
    if "all" in named:
        everything = tuple(f for f in reachable(source, registry) if f != source and f.spec.in_all)
        extra = parse_formats([n for n in named if n != "all"]) if len(named) > 1 else ()
        return tuple(dict.fromkeys((*everything, *extra)))
    return parse_formats(items)
