"""Bridge's timing and an independent loop of the raw runtime call, interleaved in ONE process.

    python bench/_interleaved_child.py OUT_DIR NAME INPUTS.npz SPECS.json WARMUP BLOCKS BLOCK_RUNS PAUSE_S

OUT_DIR is a ``bridge convert`` output, NAME a representation as verify names it (source, onnx,
tflite, tf), INPUTS.npz the source inputs verify saved, SPECS.json that representation's input
specs from the manifest (for the independent side's own feeds).

Bridge side, bridge's own code path as ``bridge verify`` runs it (``bridge.steps.run_samples``):
feeds built by ``bridge.verification.run.feeds_for`` and round-tripped through an .npz, the runner
opened with ``open_runner(fmt, path, LoadOptions(device="cpu", input_specs=...))``, every sample
run once, then sample 0 timed with ``bridge.verification.timing.measure(runner.run, feeds,
runner.synchronize, warmup=WARMUP, runs=BLOCK_RUNS)``.

Independent side, no bridge code: the artifact loaded again by the plain runtime API and its call
timed with time.perf_counter_ns (``_timing_child.make_call``), after the same warm-up.

BLOCKS pairs of blocks, the order alternating (bridge first in even pairs), PAUSE_S seconds of
sleep before every block: with two onnxruntime sessions in one process the idle session's
intra-op workers keep spinning after its block and take a core from the other side's block (see
results/onnxruntime_cnn_modes.txt, c). Prints one line ``RESULT {json}``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing_child import feeds_for, make_call  # noqa: E402  (bridge-free)


def main(out_dir: str, name: str, inputs_path: str, specs_path: str, warmup: str, blocks: str,
         block_runs: str, pause: str) -> None:
    from bridge.inputs import write_npz
    from bridge.manifest import Manifest
    from bridge.runtimes.base import LoadOptions, open_runner
    from bridge.signature import TensorSpec
    from bridge.verification.run import feeds_for as bridge_feeds_for
    from bridge.verification.run import subjects_of
    from bridge.verification.timing import LatencyStats, measure

    warmup_n, blocks_n, runs_n, pause_s = int(warmup), int(blocks), int(block_runs), float(pause)
    subject = next(s for s in subjects_of(Manifest.read(Path(out_dir)), Path(out_dir))[0] if s.name == name)
    with np.load(inputs_path) as data:
        source_inputs = {k: data[k] for k in data.files}
    samples = next(iter(source_inputs.values())).shape[0]

    # Bridge: what verify writes for this representation and what run_task does with it.
    specs = tuple(TensorSpec(s.name, tuple(d if isinstance(d, int) else 1 for d in s.shape), s.dtype)
                  for s in subject.signature.inputs)
    runner = open_runner(subject.format, Path(subject.location), LoadOptions(device="cpu", input_specs=specs))
    with tempfile.TemporaryDirectory(prefix="bench-interleaved-") as tmp:
        feeds_path = Path(tmp, "feeds.npz")
        write_npz(feeds_path, bridge_feeds_for(subject, source_inputs))
        with np.load(feeds_path) as data:
            feeds_all = {k: data[k] for k in data.files}
    for i in range(samples):
        runner.run({k: a[i] for k, a in feeds_all.items()})
    bridge_feeds = {k: a[0] for k, a in feeds_all.items()}

    # Independent: its own load and its own feeds, no bridge code.
    indep_specs = json.loads(Path(specs_path).read_text(encoding="utf-8"))
    indep_feeds = feeds_for(inputs_path, indep_specs)
    call = make_call(subject.format.value, subject.location, indep_feeds, indep_specs)
    same_feeds = set(indep_feeds) == set(bridge_feeds) and all(
        np.array_equal(indep_feeds[k], bridge_feeds[k]) and indep_feeds[k].dtype == bridge_feeds[k].dtype
        for k in bridge_feeds)
    for _ in range(samples):
        call()

    def bridge_block() -> list[int]:
        return measure(runner.run, bridge_feeds, runner.synchronize, warmup=warmup_n, runs=runs_n)

    def independent_block() -> list[int]:
        for _ in range(warmup_n):
            call()
        out = []
        for _ in range(runs_n):
            start = time.perf_counter_ns()
            call()
            out.append(time.perf_counter_ns() - start)
        return out

    bridge_ns: list[list[int]] = []
    indep_ns: list[list[int]] = []
    for b in range(blocks_n):
        order = ((bridge_block, bridge_ns), (independent_block, indep_ns))
        for fn, sink in (order if b % 2 == 0 else order[::-1]):
            time.sleep(pause_s)
            sink.append(fn())
    runner.close()

    def p50(blocks_ns: list[list[int]]) -> float:
        return LatencyStats.from_ns([t for blk in blocks_ns for t in blk], 1).p50

    print("RESULT " + json.dumps({
        "bridge_p50_ms": p50(bridge_ns), "independent_p50_ms": p50(indep_ns), "same_feeds": same_feeds,
        "bridge_block_p50_ms": [round(p50([blk]), 4) for blk in bridge_ns],
        "independent_block_p50_ms": [round(p50([blk]), 4) for blk in indep_ns],
    }), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:9])
