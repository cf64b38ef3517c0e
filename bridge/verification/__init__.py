"""The equivalence checker: compare (metrics, tolerances), timing, report, and the pipeline in run."""
