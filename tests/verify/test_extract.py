import pytest

from codeio_jax.verify.extract import extract_answer


@pytest.mark.parametrize("reply, value, method", [
    ('The loop runs twice, so {"output": [1, 2]}', [1, 2], "object"),
    ('First guess {"output": 1}. Rechecking...\n```json\n{"output": 7}\n```\n', 7, "fence"),
    ('```json\n{"output": 7}\n```\nOn reflection the answer is {"output": 8}', 8, "object"),
    ("So the result is \\boxed{42}.", 42, "boxed"),
    ('\\boxed{{"output": "a}b"}}', "a}b", "boxed"),
    ("Answer: {'output': (1, 'x', True, None)}", [1, "x", True, None], "object"),
    ("{'output': {1: 'one', 2: 'two'}}", {"1": "one", "2": "two"}, "object"),
    ("{'output': {3, 1, 2}}", [1, 2, 3], "object"),
    ('It\'s clear: {"output": "it\'s {braced}"}', "it's {braced}", "object"),
    ('```\n{"output": -0.5}\n```', -0.5, "fence"),
    ('{"answer": 1, "output": {"nested": {"deep": [1]}}}', {"nested": {"deep": [1]}}, "object"),
])
def test_extracts_the_last_answer(reply, value, method):
    found = extract_answer(reply, "output")
    assert found is not None
    assert found.value == value and found.method == method


def test_input_key():
    reply = 'The output 6 needs n = 3: {"input": {"n": 3}}'
    assert extract_answer(reply, "input").value == {"n": 3}
    assert extract_answer(reply, "output") is None


@pytest.mark.parametrize("reply", [
    "", "no answer here", '{"output": ', "{not json or python}", '{"other": 1}',
    "```json\n{broken\n```", "\\boxed{", "{'output': f(3)}",
])
def test_no_answer(reply):
    assert extract_answer(reply, "output") is None


def test_nesting_deeper_than_the_parser_goes_is_no_answer_not_a_crash():
    deep = "[" * 100_000 + "]" * 100_000
    assert extract_answer('{"output": ' + deep + "}", "output") is None
    # An earlier readable answer still counts when the last candidate is too deep to read.
    assert extract_answer('{"output": 3}\n```json\n{"output": ' + deep + '}\n```', "output").value == 3
