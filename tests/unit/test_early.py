"""The CLI starts the first hop's child before it reads the model (bridge.early): once, for that hop only."""

from __future__ import annotations

from pathlib import Path

from bridge import early
from bridge.formats import Format
from bridge.messages import HopRequest
from bridge.options import ConvertOptions
from bridge.registry import DEFAULT_REGISTRY


def test_a_model_file_gets_its_first_hop_s_child_which_is_taken_once(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")  # the name is all it reads
    early.start_first_hop(str(model), "tflite", ConvertOptions())
    try:
        onnx_to_tflite = DEFAULT_REGISTRY.get(Format.ONNX, Format.TFLITE)
        onnx_to_tf = DEFAULT_REGISTRY.get(Format.ONNX, Format.TF)
        assert onnx_to_tflite is not None and onnx_to_tf is not None
        assert early.take(onnx_to_tf) is None  # another hop
        child = early.take(onnx_to_tflite)
        assert child is not None and child.task == HopRequest.task and child.hide_gpu and child.proc.poll() is None
        assert child.fits("hop", hide_gpu=True, nice=0, work_dir=tmp_path)  # its files go anywhere
        assert early.take(onnx_to_tflite) is None
        child.close()
        assert child.proc.poll() is not None
    finally:
        early.close()


def test_nothing_starts_for_what_it_cannot_tell(tmp_path: Path) -> None:
    (tmp_path / "saved").mkdir()
    (tmp_path / "m.onnx").write_bytes(b"")
    for model, to in ((tmp_path / "missing.pt2", "onnx"), (tmp_path / "saved", "tflite"), (tmp_path / "m.onnx", "onnx"),
                      (tmp_path / "m.onnx", "nonsense")):
        early.start_first_hop(str(model), to, ConvertOptions())
    assert not early._started  # a directory, a file that is not there, nothing to do, no such format
    early.start_first_hop("mypkg.models:build", "onnx", ConvertOptions())
    early.start_first_hop(str(tmp_path / "m.onnx"), "tflite", ConvertOptions(max_memory=1 << 30))  # a budget to keep
    assert not early._started


def test_close_ends_a_child_nobody_took(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    early.start_first_hop(str(model), "tflite", ConvertOptions())
    started = list(early._started.values())
    early.close()
    assert len(started) == 1 and started[0].proc.poll() is not None and not early._started
