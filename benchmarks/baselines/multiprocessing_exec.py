"""The common way to score execution benchmarks, as a baseline to measure against.

This is the pattern of the HumanEval harness that CRUXEval's and most other
evaluation scripts copy: for each check, a `multiprocessing.Manager` list for the
result, one `multiprocessing.Process` running `exec` under a SIGALRM timeout, a
join with a grace second, and a thread pool to keep every core busy. It applies
the same CRUXEval rules as `codeio-jax score` (drop rule, all-fail rule, pass@k)
so the two can be compared check by check.

Usage: python multiprocessing_exec.py --mode input --generations G.json --out S.json --data cruxeval.jsonl
"""

import argparse
import contextlib
import json
import multiprocessing
import os
import signal
from concurrent.futures import ThreadPoolExecutor


class TimeoutException(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds):
    def handler(signum, frame):
        raise TimeoutException("timed out")

    signal.setitimer(signal.ITIMER_REAL, seconds)
    signal.signal(signal.SIGALRM, handler)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def unsafe_execute(program, timeout, result):
    try:
        with time_limit(timeout):
            exec(program, {"__name__": "__main__"})
        result.append("passed")
    except TimeoutException:
        result.append("timed out")
    except BaseException as exc:
        result.append(f"failed: {type(exc).__name__}")


def check_correctness(program, timeout=3.0):
    manager = multiprocessing.Manager()
    result = manager.list()
    process = multiprocessing.Process(target=unsafe_execute, args=(program, timeout, result))
    process.start()
    process.join(timeout=timeout + 1)
    if process.is_alive():
        process.kill()
    outcome = result[0] if result else "timed out"
    manager.shutdown()
    return outcome == "passed"


def pass_at_k(n, c, k):
    if k > n:
        return 0.0
    if n - c < k:
        return 1.0
    from math import comb
    return 1.0 - comb(n - c, k) / comb(n, k)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["input", "output"], required=True)
    parser.add_argument("--generations", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", required=True)
    args = parser.parse_args()
    samples = {}
    for line in open(args.data):
        row = json.loads(line)
        samples[row["id"]] = row
    generations = json.load(open(args.generations))

    jobs = []
    for sample_id, gens in generations.items():
        s = samples[sample_id]
        for i, g in enumerate(gens):
            dropped = ("f(" not in g) if args.mode == "input" else (f"f({s['input']})" in g)
            if not dropped:
                jobs.append((sample_id, i, f"{s['code']}\nassert {s['output']} == {g}"))
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        results = list(pool.map(lambda job: check_correctness(job[2]), jobs))
    executed = {sample_id: [] for sample_id in generations}
    for (sample_id, _, _), passed in zip(jobs, results):
        executed[sample_id].append(passed)
    scored, p1, p5 = {}, [], []
    for sample_id, gens in generations.items():
        res = executed[sample_id]
        if True not in res:
            res = [False] * len(gens)
        scored[sample_id] = res
        p1.append(pass_at_k(len(res), sum(res), 1))
        p5.append(pass_at_k(len(res), sum(res), 5))
    report = {"raw_generations": generations, "raw_scored_generations": scored,
              "pass_at_1": 100 * sum(p1) / len(p1), "pass_at_5": 100 * sum(p5) / len(p5)}
    json.dump(report, open(args.out, "w"))
    print(f"pass@1 = {report['pass_at_1']:.2f}\npass@5 = {report['pass_at_5']:.2f}")


if __name__ == "__main__":
    main()
