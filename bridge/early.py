"""The first hop's child, started by the CLI before it imports the conversion machinery and reads the model.

A ``bridge convert`` spends its first third of a second importing its own modules, reading the
source and planning the route, and only then starts the first hop's child, which spends seconds
importing its libraries (torch for torch -> onnx). Started here instead, from the file's name and
the route planned from it (both cheap), that child loads them meanwhile; the pipeline takes it for
that hop (Pipeline._take_warm), and one nobody took (a cache hit, a refused model, another route)
is ended by `close`. Only the CLI does this: a library caller has imported bridge already, and
its process may outlive the call.

This module imports nothing heavy (no numpy, no bridge.messages): that is its point.
"""

from __future__ import annotations

import threading
from pathlib import Path

from bridge.errors import BridgeError
from bridge.formats import detect
from bridge.isolation import Prestarted
from bridge.options import ConvertOptions
from bridge.registry import DEFAULT_REGISTRY, HopSpec
from bridge.route import parse_targets, plan

HOP_TASK = "hop"
"""bridge.messages.HopRequest.task, spelled out: importing bridge.messages costs what this module saves."""

_started: dict[str, Prestarted] = {}
_lock = threading.Lock()


def start_first_hop(model: str, to: str, options: ConvertOptions) -> None:
    """Start the child of the first hop `convert model --to to` will run, when `model` is a model file.

    Anything it cannot tell (a directory, a factory, a route that does not exist) starts nothing:
    the conversion then says what is wrong, in its own words. Under ``--max-memory`` nothing starts
    before the route is checked against the budget (the pipeline starts no warm child then either).
    """
    path = Path(model)
    if not path.is_file() or options.max_memory is not None:
        return
    try:
        fmt = options.from_format or detect(path)
        route = plan(fmt, parse_targets(to, fmt, DEFAULT_REGISTRY), via=options.via, registry=DEFAULT_REGISTRY)
    except BridgeError:
        return
    hop = route.hops[0]
    if hop.missing():
        return
    child = Prestarted(HOP_TASK, hop.modules, hidden=hop.hidden, hide_gpu=True)
    with _lock:
        _started[hop.name] = child


def take(hop: HopSpec) -> Prestarted | None:
    """The child started for `hop`, once."""
    with _lock:
        return _started.pop(hop.name, None)


def close() -> None:
    """End the children no hop took."""
    with _lock:
        unused = list(_started.values())
        _started.clear()
    for child in unused:
        child.close()
