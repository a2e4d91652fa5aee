"""Decontamination against real CRUXEval programs, in the pipeline and alone."""

import json

import pytest

from codeio_jax.data import decontaminate, ios, stages
from codeio_jax.data.pipeline import PipelineError, run_pipeline
from tests.conftest import shared_data
from tests.planted import wrapped

CRUXEVAL = shared_data("cruxeval/cruxeval.jsonl")


@pytest.fixture(scope="module")
def index():
    return decontaminate.build_index([decontaminate.Benchmark(str(CRUXEVAL), "cruxeval")])


def crux(number):
    for line in CRUXEVAL.read_text().splitlines():
        row = json.loads(line)
        if row["id"] == f"sample_{number}":
            return row["code"]


def test_a_renamed_reformatted_copy_is_found_by_its_syntax_tree(index):
    hit = index.check(wrapped(crux(5)))
    assert hit is not None and (hit.benchmark, hit.item) == ("cruxeval", "sample_5")
    assert hit.match == "ast" and "sample_5" in hit.reason(index.n)


def test_a_shared_span_is_found_with_its_text(index):
    # sample_0's loop inside a longer function of our own, names changed.
    code = ("def main_solution(values):\n    total = 0\n    res = []\n"
            "    for v in values:\n        res.append((values.count(v), v))\n    res.sort(reverse=True)\n"
            "    total += len(res)\n    return res, total\n")
    hit = index.check(code)
    assert hit is not None and hit.item == "sample_0" and hit.match == "span"
    assert "append" in hit.span and "count" in hit.span  # the span as it reads in the record


def test_code_of_our_own_passes_and_bad_code_is_an_error(index):
    assert index.check("def main_solution(n):\n    return sum(k * k for k in range(n)) % 1000003\n") is None
    with pytest.raises(decontaminate.CodeTokenError, match="cannot be tokenised|does not parse"):
        index.check("def main_solution(n:\n    return (\n")


def test_bad_benchmark_lines_are_reported_and_a_useless_benchmark_is_an_error(tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text('{"code": "def g(x):\\n    return x * 3 + 1\\n", "id": "one"}\n{not json\n'
                     '{"id": "no code"}\n{"code": "def (:", "id": "broken"}\n')
    index = decontaminate.build_index([decontaminate.Benchmark(str(bench), "mine")])
    assert index.items == {"mine": 1}
    assert [item["line"] for item in index.skipped] == [2, 3, 4]
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": "no code field"}\n')
    with pytest.raises(decontaminate.BenchmarkError, match="no usable program"):
        decontaminate.build_index([decontaminate.Benchmark(str(empty))])
    with pytest.raises(decontaminate.BenchmarkError, match="does not exist"):
        decontaminate.build_index([decontaminate.Benchmark(str(tmp_path / "missing.jsonl"))])


def test_the_stage_drops_copies_as_error_rows_and_keeps_every_other_record(tmp_path, index):
    records = [json.loads(line) for line in ios.DEFAULT_CORPUS.read_text().splitlines()][:10]
    copied = dict(records[0], id="copied", refcode=wrapped(crux(12)))
    broken = dict(records[1], id="broken", refcode="def main_solution(:\n")
    source = tmp_path / "with_ios.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in [copied, *records[2:], broken]))
    out, errors = tmp_path / "clean.jsonl", tmp_path / "clean.errors.jsonl"
    summary = stages.decontaminate_file(source, out, errors, index)
    kept = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    failed = [json.loads(line) for line in errors.read_text().splitlines()]
    assert summary.items == 10 and len(kept) + len(failed) == 10
    assert "copied" not in kept and "broken" not in kept
    by_id = {row["id"]: row for row in failed}
    assert by_id["copied"]["benchmark_item"] == "sample_12" and "contaminated" in by_id["copied"]["error"]
    assert "cannot be tokenised" in by_id["broken"]["error"] or "does not parse" in by_id["broken"]["error"]
    report = decontaminate.summarize(failed, index)
    assert report["benchmarks"]["cruxeval"]["programs"] == 800
    assert report["benchmarks"]["cruxeval"]["records_dropped"] == 1


def test_the_pipeline_writes_the_report_and_can_turn_the_stage_off(tmp_path):
    report = run_pipeline(work_dir=tmp_path / "on", workers=2, rounds=0, per_task=1)
    decon = json.loads((tmp_path / "on" / "decontamination.json").read_text())
    assert decon["n"] == 13 and decon["benchmarks"]["cruxeval"]["programs"] == 800
    assert report.stage("decontaminate").summary.items == 58
    off = run_pipeline(work_dir=tmp_path / "off", workers=2, rounds=0, per_task=1, decontaminate_against=[])
    assert "decontaminate" not in [stage.name for stage in off.stages]
    with pytest.raises(PipelineError, match="does not exist"):
        run_pipeline(work_dir=tmp_path / "bad", decontaminate_against=[str(tmp_path / "nowhere.jsonl")])

