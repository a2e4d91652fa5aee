"""The hostile corpus, each program run in the sandbox and checked from the host.

For every program: its status, whether it was contained (nothing written outside
the scratch folder, no connection to the host's loopback, no process left, the
pool still serving), and the time the sandbox took to contain it. The baseline is
the cost of a benign check in the same run: the ratio says how much longer a
hostile program holds a slot than a well-behaved one (the deadline of 1 s
dominates for those that never stop on their own).

Run: .venv/bin/python benchmarks/hostile_corpus.py   (as root for the full corpus)
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeio_jax.execution import Check, Limits, Sandbox, SandboxConfig  # noqa: E402
from codeio_jax.execution.hostile import CORPUS, run_corpus  # noqa: E402


def main():
    with Sandbox(SandboxConfig(workers=2, limits=Limits(timeout_s=1.0))) as sandbox:
        benign = []
        for _ in range(50):
            started = time.perf_counter()
            sandbox.run(Check("x = sum(range(100))"))
            benign.append(time.perf_counter() - started)
        base = statistics.median(benign)
        rows = []
        for hostile in CORPUS:
            with tempfile.TemporaryDirectory(prefix="codeio-canary-") as canary:
                started = time.perf_counter()
                results = run_corpus(sandbox, Path(canary), corpus=[hostile])
                rows.extend((r, time.perf_counter() - started) for r in results)
    print(f"hostile corpus: {len(rows)} programs (of {len(CORPUS)}; root-only ones need root)")
    print(f"benign check, median: {base * 1000:.1f} ms\n")
    print(f"{'program':<38}{'status':<26}{'contained':<11}{'s to contain':>13}{'x benign':>10}")
    for result, seconds in rows:
        print(f"{result.name:<38}{result.status:<26}{'yes' if result.contained else 'NO':<11}"
              f"{seconds:>13.3f}{seconds / base:>10.0f}  {result.detail}")
    contained = sum(r.contained for r, _ in rows)
    print(f"\n{contained} of {len(rows)} hostile programs contained")
    return 0 if contained == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
