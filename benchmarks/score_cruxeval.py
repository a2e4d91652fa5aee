"""CRUXEval scoring speed: `codeio-jax score` against the common way, in one run.

For both modes, all 800 samples with 10 generations each (made by
codeio_jax/verify/synthetic.py: true answers and plausible wrong ones), this times
whole commands, start-up included:
  baseline   benchmarks/baselines/multiprocessing_exec.py (HumanEval-style:
             a Manager and a Process per check, SIGALRM timeout, a thread per core)
  ours       codeio-jax score (batching checks that run no generated code)
  ours-1:1   codeio-jax score --no-batch (a fresh sandboxed child for every check)
and checks that all three agree on every generation. It also measures the floor:
plain in-process `exec` of each check program with no isolation at all.

Run: .venv/bin/python benchmarks/score_cruxeval.py [--samples N]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT.parent / "shared" / "data" / "cruxeval" / "cruxeval.jsonl"

from codeio_jax.verify.synthetic import model_like_generations  # noqa: E402


def timed(command):
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return elapsed


class _Deadline(BaseException):
    pass


def in_process_floor(samples, generations, mode):
    """Bare exec in this process (SIGALRM guards loops): seconds per check over
    all checks, and over the checks that finished before the 3 s limit."""
    def alarm(signum, frame):
        raise _Deadline()

    signal.signal(signal.SIGALRM, alarm)
    programs = []
    for sample_id, gens in generations.items():
        s = samples[sample_id]
        for g in gens:
            dropped = ("f(" not in g) if mode == "input" else (f"f({s['input']})" in g)
            if not dropped:
                programs.append(f"{s['code']}\nassert {s['output']} == {g}")
    finished, finished_time = 0, 0.0
    started = time.perf_counter()
    for program in programs:
        begun = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, 3.0)
        try:
            exec(program, {"__name__": "__main__"})
        except _Deadline:
            continue
        except BaseException:
            pass
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finished += 1
        finished_time += time.perf_counter() - begun
    total = time.perf_counter() - started
    return total / len(programs), finished_time / max(1, finished), len(programs)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=800)
    args = parser.parse_args()
    samples = {}
    with open(DATA) as f:
        for line in f:
            row = json.loads(line)
            samples[row["id"]] = row
    chosen = [samples[f"sample_{i}"] for i in range(args.samples)]
    workdir = Path(tempfile.mkdtemp(prefix="bench-cruxeval-"))
    python = sys.executable
    cores = len(os.sched_getaffinity(0))
    print(f"CRUXEval scoring, {args.samples} samples x 10 generations per mode, {cores} cores\n")
    header = f"{'mode':<7}{'checks':>7}{'baseline s':>12}{'ours s':>9}{'ours-1:1 s':>12}{'speedup':>9}{'1:1 speedup':>13}"
    print(header)
    rows = []
    for mode in ("input", "output"):
        gens = model_like_generations(chosen, mode)
        gen_path = workdir / f"{mode}.json"
        gen_path.write_text(json.dumps(gens))
        outs = {name: workdir / f"{mode}-{name}.json" for name in ("baseline", "ours", "ours11")}
        common = ["--mode", mode, "--generations", str(gen_path), "--data", str(DATA)]
        ours_cmd = [python, "-m", "codeio_jax.cli", "score", "--benchmark", "cruxeval"] + common
        t_base = timed([python, str(HERE / "baselines" / "multiprocessing_exec.py"), *common,
                        "--out", str(outs["baseline"])])
        t_ours = timed(ours_cmd + ["--out", str(outs["ours"])])
        t_11 = timed(ours_cmd + ["--out", str(outs["ours11"]), "--no-batch"])
        results = {name: json.loads(path.read_text()) for name, path in outs.items()}
        for name in ("ours", "ours11"):
            if results[name]["raw_scored_generations"] != results["baseline"]["raw_scored_generations"]:
                raise SystemExit(f"{name} disagrees with the baseline on {mode} mode")
        floor, floor_finished, checks = in_process_floor(samples, gens, mode)
        rows.append((mode, checks, t_base, t_ours, t_11, (floor, floor_finished), results["ours"]))
        print(f"{mode:<7}{checks:>7}{t_base:>12.2f}{t_ours:>9.2f}{t_11:>12.2f}"
              f"{t_base / t_ours:>8.1f}x{t_base / t_11:>12.1f}x")
    total = [sum(r[i] for r in rows) for i in (1, 2, 3, 4)]
    print(f"{'both':<7}{total[0]:>7}{total[1]:>12.2f}{total[2]:>9.2f}{total[3]:>12.2f}"
          f"{total[1] / total[2]:>8.1f}x{total[1] / total[3]:>12.1f}x")
    print("\nall three agree on every generation's pass/fail; pass@1 / pass@5:")
    for mode, *_, report in rows:
        print(f"  {mode:<7}{report['pass_at_1']:6.2f} / {report['pass_at_5']:6.2f}")
    print("\nper-check cost in ms (whole command wall time x cores / checks), against the floor:")
    print("bare in-process exec on one core, no isolation; 'finished' leaves out the checks")
    print("that run into the 3 s limit, which cost every scorer the same 3 s")
    print(f"  {'mode':<7}{'floor':>8}{'finished':>10}{'ours':>8}{'ours-1:1':>10}{'baseline':>10}"
          f"{'ours-1:1 / finished':>21}")
    for mode, checks, t_base, t_ours, t_11, (floor, finished), _ in rows:
        per = lambda t: t * cores / checks * 1e3
        print(f"  {mode:<7}{floor * 1e3:>8.3f}{finished * 1e3:>10.3f}{per(t_ours):>8.3f}{per(t_11):>10.3f}"
              f"{per(t_base):>10.3f}{per(t_11) / (finished * 1e3):>20.0f}x")


if __name__ == "__main__":
    main()
