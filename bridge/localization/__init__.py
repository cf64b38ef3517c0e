"""Localisation: where in a hop the drift is born (``bridge explain``, ``bridge verify --localize``).

- graph.py: what a capture returns (the graph in topological order, its tensors in a file).
- the captures themselves run in a child process, one per runtime: bridge/runtimes/*_capture.py,
  named by each format's `RunnerSpec.capture` (bridge/formats.py).
- join.py: parent tensors against child tensors (recorded names, or values), layouts aligned.
- walk.py: the walk in the parent's graph order: the first divergent operation, the top N.
- bisect.py: where tensors cannot be joined, cut the parent ONNX graph, convert, compare, halve.
- run.py: `explain` (the library's entry point) and the localisation of one hop.
- result.py: the `Localization` record in the reports.
"""
