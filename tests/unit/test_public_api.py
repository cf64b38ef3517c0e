"""The public surface: __all__, lazy imports, typed signatures."""

from __future__ import annotations

import inspect
import subprocess
import sys

import bridge

FRAMEWORKS = ("torch", "tensorflow", "keras", "onnx", "onnxruntime", "numpy")


def test_all_names_resolve_and_are_documented() -> None:
    assert sorted(bridge.__all__) == sorted(["__version__", *bridge._EXPORTS])
    for name in bridge.__all__:
        value = getattr(bridge, name)
        assert value is not None
        if name != "__version__":
            assert (value.__doc__ or "").strip(), f"bridge.{name} has no docstring"


def test_convert_and_verify_are_the_real_typed_functions() -> None:
    from bridge.conversion import convert
    from bridge.verification.run import verify

    assert bridge.convert is convert and bridge.verify is verify
    for function, expected in ((convert, {"model", "to", "options", "out_dir", "opset", "via", "progress"}),
                               (verify, {"target", "options", "reports", "devices", "atol", "samples"})):
        parameters = inspect.signature(function).parameters
        assert expected <= set(parameters)
        assert all(p.annotation is not inspect.Parameter.empty for p in parameters.values())
        assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def test_import_bridge_imports_no_framework_and_no_numpy() -> None:
    code = f"import sys, bridge; print([m for m in {FRAMEWORKS!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_verify_package_name_no_longer_clashes() -> None:
    import bridge.verification.report  # noqa: F401  (importing the subpackage must not rebind bridge.verify)

    assert callable(bridge.verify)
    assert bridge.verification.report.Report is bridge.Report
