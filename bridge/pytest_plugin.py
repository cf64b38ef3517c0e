"""The pytest plugin of bridge (entry point ``pytest11: bridge``): convert once per session, cached by content.

::

    def test_model_exports(bridge_convert):
        conversion = bridge_convert("mypkg.models:build", to="tflite", input_shapes={"x": (1, 10)})
        bridge.testing.assert_equivalent(conversion, atol=1e-4)

``bridge_convert(model, to, **options)`` returns a `bridge.Conversion`. The same model content
(the file's sha256, or the factory reference), targets, options and bridge version convert once
per session; the folders live in pytest's cache directory (``.pytest_cache/d/bridge``) and are
reused by the next session while nothing changed (``pytest --cache-clear`` forgets them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest


def _key(model: Any, to: Any, options: dict[str, Any]) -> str:
    from bridge import __version__
    from bridge.manifest import sha256_of

    path = Path(str(model))
    content = sha256_of(path)[0] if isinstance(model, (str, Path)) and path.exists() else repr(model)
    text = json.dumps({"model": content, "to": str(to), "options": {k: repr(v) for k, v in sorted(options.items())},
                       "bridge": __version__})
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@pytest.fixture(scope="session")
def bridge_convert(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Any]:
    """Convert a model once per session (and across sessions while its content is unchanged)."""
    from bridge.conversion import Conversion, convert
    from bridge.errors import BridgeError
    from bridge.manifest import Manifest

    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir("bridge")) if cache is not None else tmp_path_factory.mktemp("bridge")
    made: dict[str, Conversion] = {}

    def get(model: Any, to: str | Sequence[str] = "all", **options: Any) -> Conversion:
        key = _key(model, to, options)
        if key in made:
            return made[key]
        out = root / key
        if (out / "manifest.json").is_file():
            try:
                manifest = Manifest.read(out)
                from bridge.route import Route

                made[key] = Conversion(out, manifest, Route(manifest.source.format, (), ()),
                                       factory=str(model) if isinstance(model, str) and ":" in model else None)
                return made[key]
            except BridgeError:
                pass  # a damaged cache entry: convert again
        made[key] = convert(model, to, out_dir=out, force=True, strict=False, **options)
        return made[key]

    return get
