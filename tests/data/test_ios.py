"""The ios stage on real records in the real sandbox."""

import json

import pytest

from codeio_jax.data import ios
from codeio_jax.records import UnifiedRecord, read_unified
from codeio_jax.verify.compare import values_match
from tests.conftest import shared_data

COIN_CHANGE = {
    "id": "coin_change",
    "problem_description": "Given coin values `coins` and a target `amount`, how few coins make `amount`?",
    "io_requirements": "Input:\n  `coins` (list of int)\n  `amount` (int)\n\nOutput:\n  `return` (int)",
    "refcode": (
        "def main_solution(coins, amount):\n"
        "    best = [0] + [amount + 1] * amount\n"
        "    for value in range(1, amount + 1):\n"
        "        for coin in coins:\n"
        "            if coin <= value:\n"
        "                best[value] = min(best[value], best[value - coin] + 1)\n"
        "    return best[amount] if best[amount] <= amount else -1\n"),
    "input_generator": (
        "import random\n"
        "def input_generator():\n"
        "    coins = sorted(random.sample(range(1, 30), random.randint(1, 5)))\n"
        "    return {'coins': coins, 'amount': random.randint(0, 120)}\n"),
}


def record(**changes):
    return UnifiedRecord.from_dict({**COIN_CHANGE, **changes})


def run(records, sandbox, recheck, **settings):
    return list(ios.generate(ios.numbered(records), sandbox, ios.IOSettings(**{"timeout_s": 5.0, **settings}),
                             recheck=recheck))


def test_pairs_are_distinct_reproducible_and_within_limits(sandbox, recheck):
    (result,) = run([record()], sandbox, recheck)
    assert result.error is None
    pairs = result.row["ios"]
    assert len(pairs) == 10
    assert len({json.dumps(p, sort_keys=True) for p in pairs}) == 10
    namespace = {}
    exec(COIN_CHANGE["refcode"], namespace)
    for pair in pairs:
        assert namespace["main_solution"](**pair["input"]) == pair["output"]
        assert len(json.dumps(pair).encode()) < 1024


def test_same_seed_same_bytes_other_seed_other_pairs(sandbox, recheck):
    first = run([record()], sandbox, recheck, seed=7)[0].row
    again = run([record()], sandbox, recheck, seed=7)[0].row
    other = run([record()], sandbox, recheck, seed=8)[0].row
    assert json.dumps(first) == json.dumps(again)
    assert first["ios"] != other["ios"]
    # The seed depends on the record id, not on its position in the file.
    renamed = run([record(id="another_id")], sandbox, recheck, seed=7)[0].row
    assert renamed["ios"] != first["ios"]


def test_fewer_distinct_inputs_than_pairs(sandbox, recheck):
    gen = "import random\ndef input_generator():\n    return {'coins': [1, 2], 'amount': random.randint(0, 2)}\n"
    (result,) = run([record(input_generator=gen)], sandbox, recheck)
    assert len(result.row["ios"]) == 3
    assert result.row["ios_stats"]["calls"] == 1000
    assert result.row["ios_stats"]["rejected"]["duplicate input"] == 997


def test_size_limits_are_the_papers(sandbox, recheck):
    refcode = "def main_solution(n):\n    return 'x' * n\n"
    gen = "import random\ndef input_generator():\n    return {'n': random.randint(95, 105)}\n"
    (result,) = run([record(refcode=refcode, input_generator=gen)], sandbox, recheck)
    lengths = sorted(len(p["output"]) for p in result.row["ios"])
    assert lengths == list(range(95, 100))
    assert result.row["ios_stats"]["rejected"]["output has a string of 100+ characters"] > 0

    refcode = "def main_solution(n):\n    return list(range(n))\n"
    gen = "import random\ndef input_generator():\n    return {'n': random.randint(15, 25)}\n"
    (result,) = run([record(refcode=refcode, input_generator=gen)], sandbox, recheck)
    assert max(len(p["output"]) for p in result.row["ios"]) == 19


@pytest.mark.parametrize("changes, reason", [
    ({"input_generator": "def input_generator():\n    raise ValueError('boom')\n"},
     "input_generator raised ValueError: boom"),
    ({"input_generator": "def input_generator():\n    return [1]\n"}, "must return a dict"),
    ({"refcode": "def main_solution(coins, amount):\n    return 1 / 0\n"},
     "main_solution raised ZeroDivisionError"),
    ({"refcode": "def main_solution(coins, amount):\n    return None\n"}, "output is None"),
    ({"refcode": "def main_solution(coins, amount):\n    return {1, 2}\n"}, "output not JSON-serializable"),
    ({"refcode": "def main_solution(coins, amount):\n    while True:\n        pass\n"}, "timed out"),
    ({"refcode": "import not_a_module_anywhere\ndef main_solution(**kw):\n    return 1\n"},
     "missing module 'not_a_module_anywhere'"),
    ({"refcode": "def main_solution(coins, amount)\n    return 1\n"}, "does not parse"),
    ({"refcode": "import os\ndef main_solution(**kw):\n    os._exit(0)\n"}, "SystemExit"),
    ({"input_generator": "def input_generator():\n    return {}\ndef __codeio_ios__():\n    return 42\n"},
     "interfered with the harness"),
    ({"input_generator": "def input_generator():\n    return {}\ndef __codeio_ios__():\n    return {}\n"},
     "interfered with the harness"),
])
def test_failures_become_error_records(sandbox, recheck, changes, reason):
    (result,) = run([record(**changes)], sandbox, recheck, timeout_s=2.0)
    assert result.row is None
    assert reason in result.error


def test_replays_recorded_pairs_without_a_generator(sandbox, recheck):
    pairs = [{"input": {"coins": [1, 5], "amount": 7}, "output": 3},
             {"input": {"coins": [2], "amount": 3}, "output": -1},
             {"input": {"coins": [3], "amount": 9}, "output": 4}]  # wrong on purpose
    row = {k: v for k, v in COIN_CHANGE.items() if k not in ("input_generator", "id")}
    (result,) = run([UnifiedRecord.from_dict({**row, "ios": pairs})], sandbox, recheck)
    assert result.row["ios"] == pairs[:2]
    assert result.row["ios_stats"]["mismatched"] == 1
    assert result.record_id.startswith("rec_")


def test_run_file_loses_no_line(sandbox, recheck, tmp_path):
    source = tmp_path / "in.jsonl"
    good = json.dumps(COIN_CHANGE)
    lines = [good.encode(), b"{not json", b"\xff\xfe bad utf-8", json.dumps({"refcode": "x"}).encode(),
             b"", json.dumps({**COIN_CHANGE, "id": "second"}).encode(), b"[1, 2]"]
    source.write_bytes(b"\n".join(lines) + b"\n")
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    summary = ios.run_file(source, out, errors, sandbox, ios.IOSettings(timeout_s=5.0), recheck=recheck)
    assert (summary.records, summary.kept, summary.errors) == (6, 2, 4)
    kept = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert kept == ["coin_change", "second"]
    failed = [json.loads(line) for line in errors.read_text().splitlines()]
    assert [f["line"] for f in failed] == [2, 3, 4, 7]
    assert "not valid JSON" in failed[0]["error"]
    assert "UTF-8" in failed[1]["error"]
    assert "`problem_description` is missing" in failed[2]["error"]
    assert "expected a JSON object" in failed[3]["error"]


def test_reads_the_authors_records_and_reproduces_most_pairs(sandbox, recheck):
    path = shared_data("codeio/rawcode_1k_parsed.jsonl")
    records = list(read_unified(path))
    assert len(records) == 464 and all(isinstance(r, UnifiedRecord) for r in records)
    assert len({r.id for r in records}) == 464
    sample = records[:60]
    results = run(sample, sandbox, recheck, timeout_s=10.0)
    recorded = sum(len(r.ios) for r in sample)
    reproduced = sum(len(r.row["ios"]) for r in results if r.row)
    assert reproduced / recorded > 0.85
    for rec, result in zip(sample, results):
        for pair in (result.row or {}).get("ios", []):
            assert any(values_match(pair["output"], p.output) for p in rec.ios if p.input == pair["input"])
