import math

import pytest

from codeio_jax.verify.compare import first_mismatch, values_match


@pytest.mark.parametrize("predicted, expected", [
    (1, 1), ("a", "a"), (None, None), (True, True), ([1, [2, 3]], [1, [2, 3]]),
    ({"a": [1.0, 2]}, {"a": [1.0, 2]}), ((1, 2), [1, 2]),
    (3.14159, 3.1416), (100.05, 100.0), (2, 2.0005), (-5.0004, -5.0),
    ({"x": {"y": 1.23456}}, {"x": {"y": 1.2346}}), (1e-9, 1.0000001e-9),
])
def test_matches(predicted, expected):
    assert values_match(predicted, expected)


@pytest.mark.parametrize("predicted, expected", [
    (1, 2), ("a", "b"), (None, 0), (True, 1), (1, True), (0, False), ([1, 2], [1, 2, 3]),
    ({"a": 1}, {"a": 1, "b": 2}), ({"a": 1}, {"b": 1}), ("1", 1), ([1], {"0": 1}),
    (3.2, 3.1), (100.2, 100.0),
    # within 1e-3 relative but across an integer boundary: the integer parts differ
    (2.9999, 3.0), (-0.9995, -1.0),
    (math.nan, math.nan), (math.inf, math.inf), (-math.inf, -math.inf), (1.0, math.nan),
    (0.001, 0.0), (5, 5.01),
])
def test_mismatches(predicted, expected):
    assert not values_match(predicted, expected)


def test_mismatch_says_where():
    text = first_mismatch({"a": [1, 2, {"b": 3}]}, {"a": [1, 2, {"b": 4}]})
    assert '["a"][2]["b"]' in text and "predicted 3" in text and "expected 4" in text
    assert "2 items" in first_mismatch([1, 2], [1, 2, 3])
    assert "missing keys" in first_mismatch({}, {"k": 1})
