"""Drift metrics and tolerance rules on hand-made arrays (numbers that could be wrong)."""

from __future__ import annotations

import numpy as np
import pytest

from bridge import defaults
from bridge.defaults import Tolerance
from bridge.verification.compare import ToleranceRules, compare_output, missing_output

TOL = Tolerance(1e-4, 1e-3)


def test_metrics_of_a_known_difference() -> None:
    expected = np.array([[[1.0, -2.0, 0.0, 4.0]]], dtype=np.float32)  # [samples=1, 1, 4]
    actual = expected + np.array([[[0.0, 0.5, 0.0, -0.5]]], dtype=np.float32)
    drift = compare_output("y", expected, actual, TOL)
    assert drift.max_abs == pytest.approx(0.5)
    assert drift.mean_abs == pytest.approx(0.25)
    assert drift.rmse == pytest.approx(np.sqrt(0.125))
    # max_rel divides by max(|expected|, REL_FLOOR): 0.5 / 2 at the second element.
    assert drift.max_rel == pytest.approx(0.25)
    assert not drift.passed and drift.nonfinite is None
    assert "max abs 0.5" in drift.describe()


def test_within_tolerance_passes_and_the_rule_is_atol_plus_rtol() -> None:
    expected = np.full((2, 3), 100.0)
    assert compare_output("y", expected, expected + 0.09, TOL).passed  # 1e-4 + 1e-3 * 100 = 0.1001
    assert not compare_output("y", expected, expected + 0.11, TOL).passed


def test_nan_and_shape_mismatch_always_fail() -> None:
    expected = np.zeros((1, 4))
    actual = expected.copy()
    actual[0, 2] = np.nan
    drift = compare_output("y", expected, actual, Tolerance(1.0, 1.0))
    assert not drift.passed and drift.nonfinite == "NaN in actual"
    wrong = compare_output("y", np.zeros((1, 4)), np.zeros((1, 5)), TOL)
    assert not wrong.passed and "shape [5] does not match [4]" in (wrong.error or "")
    assert not missing_output("y", TOL, "gone").passed


def test_checks_let_nonfinite_values_agree_only_where_both_sides_have_them() -> None:
    expected = np.array([[np.nan, 1.0, np.inf]])
    same = compare_output("y", expected, np.array([[np.nan, 1.0 + 1e-6, np.inf]]), TOL, same_nonfinite_agrees=True)
    assert same.passed and same.max_abs == pytest.approx(1e-6)
    assert not compare_output("y", expected, expected.copy(), TOL).passed  # verify: a NaN always fails
    moved = compare_output("y", expected, np.array([[1.0, np.nan, np.inf]]), TOL, same_nonfinite_agrees=True)
    assert not moved.passed and moved.nonfinite
    sign = compare_output("y", expected, np.array([[np.nan, 1.0, -np.inf]]), TOL, same_nonfinite_agrees=True)
    assert not sign.passed


def test_top1_and_top5_for_class_scores() -> None:
    rng = np.random.default_rng(0)
    expected = rng.standard_normal((4, 1, 10))
    actual = expected.copy()
    actual[0, 0] = -actual[0, 0]  # sample 0's ranking reversed: its top-1 moves
    drift = compare_output("logits", expected, actual, TOL)
    assert drift.top1_agreement == pytest.approx(0.75)
    assert drift.top5_overlap is not None and drift.top5_overlap < 1.0
    assert compare_output("logits", expected, expected, TOL).top5_overlap == 1.0


def test_cosine_of_opposite_and_equal_outputs() -> None:
    x = np.array([[1.0, 2.0, 3.0]])
    assert compare_output("y", x, -x, TOL).cosine == pytest.approx(-1.0)
    assert compare_output("y", x, x, TOL).cosine == pytest.approx(1.0)


def test_tolerance_rules_by_dtype_flag_and_output() -> None:
    assert ToleranceRules().for_output("y", "float16") == defaults.TOLERANCES["float16"]
    assert ToleranceRules().for_output("ids", "int64").atol == 0.0
    assert ToleranceRules().for_output("y", "bfloat16") == defaults.TOLERANCES["bfloat16"]
    assert ToleranceRules().for_output("y", "float8e4m3fn") == defaults.TOLERANCES["float32"]
    rules = ToleranceRules(atol=0.5, rtol=None, per_output={"logits": 0.25})
    general = rules.for_output("y", "float32")
    assert (general.atol, general.rtol, general.source) == (0.5, 1e-3, "--atol/--rtol")
    special = rules.for_output("logits", "float32")
    assert special.atol == 0.25 and special.source == "--tol logits=0.25"


def test_a_quantized_outputs_max_abs_is_also_given_in_steps_of_its_scale() -> None:
    expected = np.zeros((2, 4))
    actual = expected + np.array([0.0, 0.05, -0.25, 0.1])
    assert compare_output("y", expected, actual, TOL, scale=0.1).max_abs_scales == pytest.approx(2.5)
    assert compare_output("y", expected, actual, TOL).max_abs_scales is None  # no scale recorded: not given


def test_the_error_histogram_counts_each_element_in_its_decade() -> None:
    from bridge.verification.compare import HISTOGRAM_EDGES

    expected = np.zeros((1, 6))
    actual = np.array([[0.0, 5e-10, 3e-7, 3e-7, 0.5, 50.0]])
    counts = compare_output("y", expected, actual, TOL).histogram
    assert len(counts) == len(HISTOGRAM_EDGES) + 1 and sum(counts) == 6
    assert counts[0] == 2 and counts[3] == 2 and counts[9] == 1 and counts[-1] == 1  # [0,1e-9), [1e-7,1e-6), [0.1,1), [10,inf)
