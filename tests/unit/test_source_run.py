"""SourceRun: the source's check run is lent once to the hop that carries it, and runs on its own otherwise."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import pytest

from bridge.checking import CarriedRuns, Ran, SourceRun
from bridge.formats import Format
from bridge.manifest import ChecksRecord
from bridge.runtimes.registry import DEFAULT_RUNNERS
from bridge.signature import Signature
from bridge.verification.run import Slot, Subject, run_request

RECORD = ChecksRecord(0, 2, "sha", (1,))


def _carried(tmp_path: Path) -> CarriedRuns:
    subject = Subject("source", Format.TORCH, tmp_path / "m.pt2", Signature((), ()), None, "float32", "")
    slot = Slot(subject, DEFAULT_RUNNERS.primary(Format.TORCH), "cpu", primary=True)
    return CarriedRuns(slot, (run_request(slot, tmp_path / "feeds0.npz", tmp_path, 2, runs=0, warmup=0),))


class _Own:
    def __init__(self) -> None:
        self.started = 0

    def __call__(self) -> Future[Ran]:
        self.started += 1
        future: Future[Ran] = Future()
        future.set_result(Ran("torch", ({},)))
        return future


def test_it_is_lent_once_and_only_to_its_carrier(tmp_path: Path) -> None:
    own = _Own()
    run = SourceRun(_carried(tmp_path), "torch->onnx", RECORD, own)
    assert run.lend("torch->tflite") == ()
    assert len(run.lend("torch->onnx")) == 1
    assert run.lend("torch->onnx") == ()  # lent already
    assert own.started == 0


def test_a_carrier_that_wrote_nothing_hands_it_to_its_own_run(tmp_path: Path) -> None:
    own = _Own()
    run = SourceRun(_carried(tmp_path), "torch->onnx", RECORD, own)
    run.lend("torch->onnx")
    run.returned(None)  # the child ended before it wrote the results
    assert run.result().outputs == ({},) and own.started == 1
    assert run.lend("torch->onnx") == ()  # never lent again


def test_once_the_conversion_is_over_a_carrier_that_wrote_nothing_is_not_replaced(tmp_path: Path) -> None:
    own = _Own()
    run = SourceRun(_carried(tmp_path), "torch->onnx", RECORD, own)
    run.lend("torch->onnx")
    run.close()
    run.returned(None)  # ended with the run, its results not needed any more
    assert own.started == 0
    assert run.lend("torch->onnx") == ()
    with pytest.raises(RuntimeError, match="after the conversion ended"):  # never a wait for ever
        run.result()


def test_a_check_that_needs_it_before_any_hop_took_it_starts_its_own(tmp_path: Path) -> None:
    own = _Own()
    run = SourceRun(_carried(tmp_path), "torch->onnx", RECORD, own)
    assert run.result().runtime == "torch" and own.started == 1
    assert run.lend("torch->onnx") == ()


def test_without_a_carrier_it_starts_at_once(tmp_path: Path) -> None:
    own = _Own()
    SourceRun(None, None, RECORD, own)
    assert own.started == 1
