"""I/O-pair generation: `codeio-jax ios` against the authors' way, in one run.

The authors run each record in a fresh `python3` process: they write a script
that opens with a fixed block of imports (the standard-library modules CodeI/O
code uses, and numpy as np), then the record's code, and run it. The baseline
here does the same: per record, a script with that import block, the record's
code and exactly the loop our stage runs (same seed, same limits), started as
`python script.py`, one process per core at a time. A second baseline drops the
import block (a bare interpreter per record), the cheapest a fresh-process
design can be. All three must produce the same pairs, record for record.

Corpora: the embedded default corpus (generated pairs); the same corpus ten
times over with suffixed ids (other seeds, so other pairs), where start-up no
longer dominates; and, when ../shared/data is present, the CodeI/O authors' 464
parsed records (replayed pairs, dominated by a few records that compute for
seconds either way).

Run: .venv/bin/python benchmarks/ios_pairs.py
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeio_jax.data import ios, ios_harness  # noqa: E402
from codeio_jax.records import UnifiedRecord, read_unified  # noqa: E402

AUTHORS = ROOT.parent / "shared" / "data" / "codeio" / "rawcode_1k_parsed.jsonl"

# What every program of the authors' pipeline imports before the record's code:
# the same modules as their fixed block (which also binds many names from them).
AUTHORS_IMPORTS = "".join(f"import {name}\n" for name in (
    "bisect", "collections", "copy", "datetime", "functools", "heapq", "itertools", "json",
    "math", "operator", "os.path", "random", "re", "signal", "string", "sys", "typing",
)) + "import numpy as np\n"


def baseline(records, settings, workdir, preamble):
    """One fresh interpreter per record, each script opening with `preamble`;
    returns {id: program result or None}."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": "0"}
    scripts = []
    for i, record in enumerate(records):
        make = ios_harness.generator_check if record.input_generator else ios_harness.replay_check
        check = make(record, settings)
        path = workdir / f"record_{i}.py"
        path.write_text(f"{preamble}\n{check.prelude}\n\n{check.source}\n\nimport json\nprint(json.dumps({check.entry}()))\n")
        scripts.append((record.id, path))

    def run(item):
        record_id, path = item
        try:
            done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                                  timeout=settings.timeout_s, env=env, cwd=workdir)
        except subprocess.TimeoutExpired:
            return record_id, None
        if done.returncode != 0:
            return record_id, None
        return record_id, json.loads(done.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        return dict(pool.map(run, scripts))


def ours(source, workdir):
    out = workdir / "ours.jsonl"
    done = subprocess.run([sys.executable, "-m", "codeio_jax.cli", "ios", "--in", str(source),
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return {json.loads(line)["id"]: json.loads(line) for line in out.read_text().splitlines()}


def compare(records, base, mine, settings):
    """The records for which a baseline and ours keep different pairs. Generated pairs are
    seeded and must agree everywhere; a replayed record whose code reads the clock
    (the authors' corpus has such) may legitimately differ."""
    differing = []
    for record in records:
        result = base.get(record.id)
        ours_row = mine.get(record.id)
        if record.input_generator:
            expected = result["pairs"] if result and "pairs" in result else []
        else:
            if result is None:
                expected = []
            else:
                fake = ios.judge(record, 0, _Passed(result), settings)
                expected = fake.row["ios"] if fake.row else []
        got = ours_row["ios"] if ours_row else []
        if expected != got:
            if record.input_generator:
                raise SystemExit(f"record {record.id}: the baseline and ours keep different pairs")
            differing.append(record.id)
    if len(differing) > 0.02 * len(records):
        raise SystemExit(f"the baseline and ours differ on {len(differing)} records: {differing[:10]}")
    return differing


class _Passed:
    passed = True

    def __init__(self, value):
        self.value = value


def main():
    settings = ios.IOSettings()
    scaled = Path(tempfile.mkdtemp(prefix="bench-ios-scaled-")) / "corpus_x10.jsonl"
    rows = [json.loads(line) for line in ios.DEFAULT_CORPUS.read_text().splitlines()]
    scaled.write_text("".join(json.dumps({**row, "id": f"{row['id']}-{k}"}) + "\n"
                              for k in range(10) for row in rows))
    corpora = [("embedded corpus", ios.DEFAULT_CORPUS), ("embedded corpus x10", scaled)]
    if AUTHORS.exists():
        corpora.append(("authors' 464 (replay)", AUTHORS))
    print(f"I/O pairs: codeio-jax ios vs a fresh python per record, {len(os.sched_getaffinity(0))} cores\n")
    notes = []
    print(f"{'':<32}{'':>9}{'seconds':^28}{'speedup vs':^20}")
    print(f"{'corpus':<24}{'records':>8}{'pairs':>7}{'authors':>10}{'bare':>9}{'ours':>9}"
          f"{'authors':>10}{'bare':>9}")
    for name, source in corpora:
        records = [r for r in read_unified(source) if isinstance(r, UnifiedRecord)]
        workdir = Path(tempfile.mkdtemp(prefix="bench-ios-"))
        started = time.perf_counter()
        authors = baseline(records, settings, workdir, AUTHORS_IMPORTS)
        t_authors = time.perf_counter() - started
        started = time.perf_counter()
        bare = baseline(records, settings, workdir, "")
        t_bare = time.perf_counter() - started
        started = time.perf_counter()
        mine = ours(source, workdir)
        t_ours = time.perf_counter() - started
        differing = sorted(set(compare(records, authors, mine, settings))
                           | set(compare(records, bare, mine, settings)))
        pairs = sum(len(row["ios"]) for row in mine.values())
        print(f"{name:<24}{len(records):>8}{pairs:>7}{t_authors:>10.2f}{t_bare:>9.2f}{t_ours:>9.2f}"
              f"{t_authors / t_ours:>9.1f}x{t_bare / t_ours:>8.1f}x")
        notes.append(f"{name}: all three ways keep identical pairs for {len(records) - len(differing)} of "
                     f"{len(records)} records" + (f" (differing, nondeterministic code: {differing})"
                                                   if differing else ""))
    print()
    print("\n".join(notes))


if __name__ == "__main__":
    main()
