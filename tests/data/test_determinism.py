"""Determinism: pairs that change in another world (seed, hash seed, clock, call
order, a fresh run of the code) are dropped, in the real sandboxes."""

import json
import subprocess
import sys

import pytest

from codeio_jax.data import ios
from codeio_jax.data.determinism import RECHECK_HASH_SEED
from codeio_jax.records import UnifiedRecord

GENERATOR = ("import random\n"
             "def input_generator():\n"
             "    return {'n': random.randint(0, 10 ** 6)}\n")


def record(refcode, generator=GENERATOR, **changes):
    return UnifiedRecord.from_dict({
        "id": changes.pop("id", "rec"), "problem_description": "Given `n`, what comes out?",
        "io_requirements": "Input:\n  `n` (int)\n\nOutput:\n  `return` (int)",
        "refcode": refcode, **({"input_generator": generator} if generator else {}), **changes})


def run(records, sandbox, recheck, **settings):
    return list(ios.generate(ios.numbered(records), sandbox, ios.IOSettings(**{"timeout_s": 5.0, **settings}),
                             recheck=recheck))


@pytest.mark.parametrize("name,refcode", [
    ("the wall clock", "import time\ndef main_solution(n):\n    return n + int(time.time()) // 86400\n"),
    ("a clock imported by name", "from time import time\ndef main_solution(n):\n    return int(time()) // 3600\n"),
    ("today's date", "import datetime\ndef main_solution(n):\n    return datetime.date.today().toordinal() - n\n"),
    ("datetime.now", "from datetime import datetime\ndef main_solution(n):\n    return datetime.now().day * n + 1\n"),
    ("unseeded randomness", "import random\ndef main_solution(n):\n    return n + random.randint(0, 10 ** 9)\n"),
    ("numpy's global generator", "import numpy as np\ndef main_solution(n):\n    return int(np.random.randint(0, 10 ** 9)) + n\n"),
    ("the order of a set of strings",
     "def main_solution(n):\n    return ''.join({'alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta'}) + str(n)\n"),
    ("a counter kept between calls", "calls = 0\ndef main_solution(n):\n    global calls\n    calls += 1\n"
                                     "    return n * 10 + calls\n"),
])
def test_an_output_that_depends_on_the_world_is_an_error_row_with_the_values(sandbox, recheck, name, refcode):
    (result,) = run([record(refcode)], sandbox, recheck)
    assert result.row is None, name
    if "random" in refcode:
        assert result.error.startswith("non-deterministic: the code draws from `"), result.error
        assert "outputs changed with the seed" in result.error
    else:
        assert result.error.startswith("non-deterministic: 10 of 10 pairs gave another output"), result.error
        assert "recorded" in result.error and ("gave" in result.error or "raised" in result.error)
    assert ios.reason_kind(result.error) == "non-deterministic"


def test_randomness_that_shows_once_spoils_every_pair_and_randomness_that_never_shows_is_fine(sandbox, recheck):
    # The maximum of 98 draws below 100 is 99 two times in three: some pairs agree by chance, not all.
    chance = "import random\ndef main_solution(n):\n    return max(random.randrange(100) for _ in range(98)) + n\n"
    # A randomised algorithm whose answer does not depend on the draws.
    hidden = ("import random\ndef main_solution(n):\n    items = list(range(n % 50 + 5))\n"
              "    random.shuffle(items)\n    return sorted(items)[-1]\n")
    seeded = ("from random import seed, randrange\ndef main_solution(n):\n    seed(n)\n"
              "    return randrange(10 ** 9)\n")
    by_chance, hidden, own_seed = run([record(chance, id="chance"), record(hidden, id="hidden"),
                                       record(seeded, id="seeded")], sandbox, recheck)
    assert by_chance.row is None and "draws from `random` without seeding it" in by_chance.error
    assert hidden.error is None and len(hidden.row["ios"]) == 10
    assert hidden.row["ios_stats"]["determinism"]["unseeded"] == 10
    assert own_seed.error is None and len(own_seed.row["ios"]) == 10


def test_a_deterministic_record_keeps_every_pair_and_says_they_held(sandbox, recheck):
    # A memo table that only caches (the answer never depends on what came before) is no problem.
    refcode = ("import functools\n@functools.lru_cache(maxsize=None)\n"
               "def fib(k):\n    return k if k < 2 else fib(k - 1) + fib(k - 2)\n"
               "def main_solution(n):\n    return fib(n % 90)\n")
    (result,) = run([record(refcode)], sandbox, recheck)
    assert result.error is None
    assert len(result.row["ios"]) == 10
    assert result.row["ios_stats"]["determinism"] == {"checked": 10, "held": 10, "differed": 0, "unchecked": 0}


def test_pairs_that_held_are_kept_when_enough_of_them_did(sandbox, recheck):
    # State leaks into odd inputs only: the even ones hold in every world.
    refcode = ("seen = []\ndef main_solution(n):\n    seen.append(n)\n"
               "    return n if n % 2 == 0 else len(seen)\n")
    generator = "import random\ndef input_generator():\n    return {'n': random.randint(0, 10 ** 6)}\n"
    (result,) = run([record(refcode, generator)], sandbox, recheck)
    assert result.error is None
    kept = [pair["input"]["n"] for pair in result.row["ios"]]
    stats = result.row["ios_stats"]["determinism"]
    assert kept and all(n % 2 == 0 for n in kept) and stats["held"] == len(kept)
    assert stats["differed"] == 10 - len(kept) > 0
    (strict,) = run([record(refcode, generator)], sandbox, recheck, deterministic_min_pairs=10)
    assert strict.row is None and "at least 10 needed" in strict.error


def test_replayed_records_are_checked_the_same_way(sandbox, recheck):
    refcode = "calls = 0\ndef main_solution(n):\n    global calls\n    calls += 1\n    return n + calls\n"
    recorded = [{"input": {"n": n}, "output": n + i + 1} for i, n in enumerate([5, 7, 11])]
    (result,) = run([record(refcode, generator=None, ios=recorded)], sandbox, recheck)
    assert result.row is None and result.error.startswith("non-deterministic: 3 of 3 pairs")
    assert "called after the others, in reverse order gave" in result.error


def test_determinism_off_keeps_what_the_first_run_recorded(sandbox, recheck):
    refcode = "import random\ndef main_solution(n):\n    return n + random.randint(0, 10 ** 9)\n"
    (result,) = run([record(refcode)], sandbox, None, determinism=False)
    assert result.error is None and len(result.row["ios"]) == 10
    assert "determinism" not in result.row["ios_stats"]
    with pytest.raises(ValueError, match="other world's sandbox"):
        run([record(refcode)], sandbox, None)


def test_a_recheck_that_cannot_finish_is_an_error_row_not_a_crash(sandbox, recheck):
    # Fast in the first world, endless in the other: its slots hash strings with seed 1.
    other = subprocess.run([sys.executable, "-c", "print(hash('codeio'))"], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": str(RECHECK_HASH_SEED)}, check=True).stdout.strip()
    refcode = f"def main_solution(n):\n    while hash('codeio') == {other}:\n        pass\n    return n\n"
    (result,) = run([record(refcode)], sandbox, recheck, timeout_s=1.0)
    assert result.row is None
    assert "determinism check" in result.error, result.error
    assert json.dumps(result.to_dict())  # an error row like any other


@pytest.mark.parametrize("name,refcode", [
    ("time taken", "import time\ndef main_solution(n):\n    start = time.perf_counter()\n"
                   "    total = sum(range(n))\n    return [total, time.perf_counter() - start]\n"),
    ("CPU time", "import time\ndef main_solution(n):\n    return [time.process_time(), n]\n"),
    ("the date and time", "import datetime\ndef main_solution(n):\n    return str(datetime.datetime.now()) + str(n)\n"),
    ("numpy's global generator", "import numpy as np\ndef main_solution(n):\n    return [float(np.random.rand()), n]\n"),
])
def test_the_first_world_records_the_same_pairs_on_every_run(sandbox, recheck, name, refcode):
    """A virtual clock and seeded generators: rerunning the stage gives the same
    bytes even for code that reads the clock or draws unseeded numbers (which the
    recheck, in its own world, then drops)."""
    runs = [run([record(refcode)], sandbox, recheck, determinism=False)[0].row["ios"] for _ in range(2)]
    assert runs[0] == runs[1], name
    (checked,) = run([record(refcode)], sandbox, recheck)
    assert checked.row is None and ios.reason_kind(checked.error) == "non-deterministic", name
