"""Start-up of `codeio-jax score`: from launching the command to its first check.

Times, in one run and over repeats (median):
  interpreter  `python -c pass`: the floor any Python command pays
  baseline     the HumanEval-style scorer on the same one-generation file
  ours         `codeio-jax score` on a one-generation file, whole command; and
               the time to its first finished check, which it logs to stderr
               when CODEIO_TRACE_FIRST_CHECK is set
and lists what the command imported, to show that neither TensorFlow nor JAX
(nor numpy) is among it.

Run: .venv/bin/python benchmarks/score_startup.py
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT.parent / "shared" / "data" / "cruxeval" / "cruxeval.jsonl"
REPEATS = 7


def wall(command, env=None):
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{command} failed: {done.stderr[-2000:]}")
    return elapsed, done


def main():
    workdir = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    first = json.loads(DATA.read_text().splitlines()[0])
    gens = workdir / "gens.json"
    gens.write_text(json.dumps({first["id"]: [first["output"]]}))
    python = sys.executable
    common = ["--mode", "output", "--generations", str(gens), "--data", str(DATA)]
    ours = [python, "-m", "codeio_jax.cli", "score", "--benchmark", "cruxeval", *common,
            "--out", str(workdir / "ours.json")]
    base = [python, str(HERE / "baselines" / "multiprocessing_exec.py"), *common,
            "--out", str(workdir / "base.json")]
    env = {**os.environ, "CODEIO_TRACE_FIRST_CHECK": "1"}
    times = {"interpreter": [], "baseline": [], "ours": [], "ours to first check": []}
    for _ in range(REPEATS):
        times["interpreter"].append(wall([python, "-c", "pass"])[0])
        times["baseline"].append(wall(base)[0])
        started = time.time()
        elapsed, done = wall(ours, env)
        times["ours"].append(elapsed)
        stamp = [line for line in done.stderr.splitlines() if line.startswith("first check done at ")]
        times["ours to first check"].append(float(stamp[0].split()[-1]) - started)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"start-up, one-generation CRUXEval file, median of {REPEATS}\n")
    for name, value in median.items():
        print(f"  {name:<22}{value * 1000:8.0f} ms")
    print(f"\n  ours to first check: {median['ours to first check']:.3f} s (target under 0.5 s)")
    print(f"  baseline / ours, whole command: {median['baseline'] / median['ours']:.1f}x")

    _, done = wall([python, "-X", "importtime", *ours[1:]])
    packages = sorted({line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()
                       if line.startswith("import time:") and "|" in line} - {"package"})
    heavy = [p for p in packages if p in ("tensorflow", "jax", "jaxlib", "numpy", "seqio", "flax", "torch")]
    print(f"  top-level modules imported: {len(packages)}; heavy ones: {heavy or 'none'}")


if __name__ == "__main__":
    main()
