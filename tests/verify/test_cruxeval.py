"""CRUXEval scoring against the benchmark's own rules and an independent reference."""

import json
import subprocess
import sys

import pytest

from codeio_jax.verify import cruxeval
from codeio_jax.verify.passk import pass_at_k
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def samples():
    return cruxeval.load_samples(shared_data("cruxeval/cruxeval.jsonl"))


def test_pass_at_k_estimator():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 1, 5) == pytest.approx(0.5)
    assert pass_at_k(10, 6, 5) == 1.0  # n - c < k
    assert pass_at_k(3, 3, 5) == 0.0  # fewer than k generations
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_drop_rules(samples):
    s = samples["sample_0"]
    assert cruxeval.is_dropped("input", s, "[1, 2]")
    assert not cruxeval.is_dropped("input", s, "f([1])")
    assert cruxeval.is_dropped("output", s, f"f({s.input})")
    assert not cruxeval.is_dropped("output", s, s.output)


def test_true_answers_score_100_and_wrong_ones_0(samples, sandbox):
    ids = [f"sample_{i}" for i in range(0, 800, 40)]
    right_out = {i: [samples[i].output] * 5 for i in ids}
    right_in = {i: [f"f({samples[i].input})"] * 5 for i in ids}
    for mode, gens in (("output", right_out), ("input", right_in)):
        report = cruxeval.score(gens, mode, samples, sandbox)
        assert report.pass_at_1 == 100.0 and report.pass_at_5 == 100.0, mode
    wrong = {i: ["'not the answer'", "None"] for i in ids}
    report = cruxeval.score(wrong, "output", samples, sandbox)
    assert report.pass_at_1 == 0.0
    assert all(v == [False, False] for v in report.raw_scored_generations.values())


def test_dropped_generations_do_not_count_in_n(samples, sandbox):
    s = samples["sample_0"]
    gens = {"sample_0": [s.output, f"f({s.input})", "'wrong'"]}
    report = cruxeval.score(gens, "output", samples, sandbox)
    assert report.statuses["sample_0"] == ["passed", "skipped", "failed"]
    assert report.raw_scored_generations["sample_0"] == [True, False]
    assert report.pass_at_1 == pytest.approx(50.0)
    assert report.pass_at_5 == 0.0  # two executed generations: fewer than 5


def test_sample_with_no_pass_counts_all_generations(samples, sandbox):
    gens = {"sample_1": ["[1]", "[2]", "[3]"]}  # input mode: all dropped (no `f(`)
    report = cruxeval.score(gens, "input", samples, sandbox)
    assert report.statuses["sample_1"] == ["skipped"] * 3
    assert report.raw_scored_generations["sample_1"] == [False, False, False]


def test_hostile_generations_never_pass(samples, sandbox):
    s = samples["sample_0"]
    gens = {"sample_0": [
        f"{s.output} or __import__('os')._exit(0)",
        "exit(0)",
        "__import__('sys').exit(0)",
        "[] ; import os; os._exit(0)",
        "(lambda: (_ for _ in ()).throw(SystemExit(0)))()",
    ]}
    report = cruxeval.score(gens, "output", samples, sandbox)
    assert report.statuses["sample_0"][0] == "passed"  # `a == b or ...` is true without running the rest
    assert not any(report.raw_scored_generations["sample_0"][1:])


def _reference_statuses(samples, generations, mode):
    """The official harness's verdict, by a fresh interpreter per check."""
    verdicts = {}
    for sample_id, gens in generations.items():
        s = samples[sample_id]
        results = []
        for g in gens:
            if cruxeval.is_dropped(mode, s, g):
                results.append(None)
                continue
            program = f"{s.code}\nassert {s.output} == {g}"
            try:
                done = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=3)
                results.append(done.returncode == 0)
            except subprocess.TimeoutExpired:
                results.append(False)
        verdicts[sample_id] = results
    return verdicts


@pytest.mark.parametrize("batch", [True, False])
def test_agrees_with_a_fresh_interpreter_per_check(samples, sandbox, batch):
    gens_out, gens_in = {}, {}
    for i in range(0, 800, 100):
        s = samples[f"sample_{i}"]
        gens_out[s.id] = [s.output, "None", "''", "[1, 2, 3]", f"{s.output} if True else 0", "{1: 2}"]
        gens_in[s.id] = [f"f({s.input})", "f(1)", "f('')", "f([])", "f(*[])", "f(text='a')"]
    for mode, gens in (("output", gens_out), ("input", gens_in)):
        report = cruxeval.score(gens, mode, samples, sandbox, batch=batch)
        reference = _reference_statuses(samples, gens, mode)
        for sample_id, results in reference.items():
            ours = [st == "passed" for st in report.statuses[sample_id]]
            expected = [bool(r) for r in results]
            assert ours == expected, (mode, sample_id, report.statuses[sample_id], results)


def test_batched_and_isolated_statuses_are_identical(samples, sandbox):
    gens = {}
    for i in range(3, 800, 57):
        s = samples[f"sample_{i}"]
        gens[s.id] = [f"f({s.input})", "f(1)", "f('abc')", "f([1, 2], 3)", "f(None)", "f({'a': 1})"]
    batched = cruxeval.score(gens, "input", samples, sandbox, batch=True)
    isolated = cruxeval.score(gens, "input", samples, sandbox, batch=False)
    assert batched.batched_checks > 0 and isolated.batched_checks == 0
    assert batched.statuses == isolated.statuses


def test_bad_generation_files_are_refused(samples, sandbox):
    for bad, message in ([["x"], "JSON object"], [{"sample_99999": ["x"]}, "not a CRUXEval sample"],
                         [{"sample_0": "x"}, "list of strings"], [{"sample_0": []}, "empty"]):
        with pytest.raises(cruxeval.ScoringError, match=message):
            cruxeval.score(bad, "output", samples, sandbox)


def test_score_command_end_to_end(tmp_path, samples):
    gens = {"sample_0": [samples["sample_0"].output, "[]"], "sample_5": ["'x'"]}
    gen_path = tmp_path / "gens.json"
    gen_path.write_text(json.dumps(gens))
    out = tmp_path / "scored.json"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "codeio_jax.cli", "score", "--benchmark", "cruxeval",
         "--mode", "output", "--generations", str(gen_path), "--out", str(out),
         "--data", str(shared_data("cruxeval/cruxeval.jsonl"))],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pass@1 = 25.00" in done.stdout and "pass@5 = 0.00" in done.stdout
    scored = json.loads(out.read_text())
    assert set(scored) == {"raw_generations", "raw_scored_generations", "statuses", "pass_at_1", "pass_at_5"}
    assert scored["statuses"] == {"sample_0": ["passed", "failed"], "sample_5": ["failed"]}
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert not imported & {"jax", "tensorflow", "numpy", "seqio", "flax", "torch"}, imported


def test_score_command_reports_bad_input(tmp_path):
    gen_path = tmp_path / "gens.json"
    gen_path.write_text("{not json")
    done = subprocess.run([sys.executable, "-m", "codeio_jax.cli", "score", "--benchmark", "cruxeval",
                           "--mode", "input", "--generations", str(gen_path), "--out", str(tmp_path / "o.json")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "not valid JSON" in done.stderr and "Traceback" not in done.stderr
