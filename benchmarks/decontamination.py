"""Decontamination (codeio_jax/data/decontaminate.py) against CRUXEval: how many
planted copies it finds, and how many clean records it drops.

Planted copies, each CRUXEval program turned into a unified record's code:
  - wrapped: renamed throughout (functions, arguments, variables), reformatted
    by ast.unparse, beside a helper and a main_solution that calls it;
  - inlined: renamed, its body made main_solution's, with a line of our own
    put in its middle (no syntax tree equals the benchmark's any more).
Clean records: the embedded corpus and the CodeI/O authors' 464 (none of them is
from CRUXEval, so every drop there is a false one).

The baseline, measured in the same run: the same spans without normalisation
(tokens as written: names kept, no renaming, no syntax trees), the check one
would write first. Printed for span lengths n = 10, 13 (the default), 16, 20.

Run: .venv/bin/python benchmarks/decontamination.py
"""

import hashlib
import io
import json
import sys
import time
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeio_jax.data import decontaminate, ios  # noqa: E402
from codeio_jax.verify.cruxeval import DEFAULT_DATA  # noqa: E402
from tests.planted import inlined, wrapped  # noqa: E402

AUTHORS = ROOT.parent / "shared" / "data" / "codeio" / "rawcode_1k_parsed.jsonl"


class RawSpans:
    """The baseline: n-token spans of the tokens as written."""

    def __init__(self, programs, n):
        self.n = n
        self.spans = {digest for code in programs for digest in self.digests(code)}

    def digests(self, code):
        tokens = [t.string for t in tokenize.generate_tokens(io.StringIO(code).readline)
                  if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                                    tokenize.DEDENT, tokenize.ENDMARKER)]
        for start in range(len(tokens) - self.n + 1):
            yield hashlib.blake2b("\x1f".join(tokens[start:start + self.n]).encode(), digest_size=12).digest()

    def check(self, code):
        return any(digest in self.spans for digest in self.digests(code))


def main():
    crux = [json.loads(line)["code"] for line in DEFAULT_DATA.read_text().splitlines()]
    planted = {"wrapped": [wrapped(code) for code in crux], "inlined": [inlined(code) for code in crux]}
    clean = {"embedded": [json.loads(line)["refcode"] for line in ios.DEFAULT_CORPUS.read_text().splitlines()],
             "authors": [json.loads(line)["refcode"] for line in AUTHORS.read_text().splitlines()]}
    print(f"CRUXEval: {len(crux)} programs planted twice; clean: {len(clean['embedded'])} embedded records, "
          f"{len(clean['authors'])} of the authors'\n")
    print("| check | n | found wrapped | found inlined | false drops, embedded | false drops, authors' | records/s |")
    print("|---|---|---|---|---|---|---|")
    rows = {}
    for n in (10, 13, 16, 20):
        ours = decontaminate.build_index([decontaminate.Benchmark(str(DEFAULT_DATA), "cruxeval")], n)
        raw = RawSpans(crux, n)
        for name, checker, hit in (("raw spans (baseline)", raw, raw.check),
                                   ("ours", ours, lambda code, index=ours: index.check(code) is not None)):
            started = time.perf_counter()
            found = {kind: sum(map(hit, codes)) for kind, codes in planted.items()}
            dropped = {kind: sum(map(hit, codes)) for kind, codes in clean.items()}
            checked = sum(map(len, planted.values())) + sum(map(len, clean.values()))
            rate = checked / (time.perf_counter() - started)
            rows[(name, n)] = found
            print(f"| {name} | {n} | {found['wrapped']}/{len(crux)} ({100 * found['wrapped'] / len(crux):.1f}%) | "
                  f"{found['inlined']}/{len(crux)} ({100 * found['inlined'] / len(crux):.1f}%) | "
                  f"{dropped['embedded']}/{len(clean['embedded'])} | {dropped['authors']}/{len(clean['authors'])} "
                  f"({100 * dropped['authors'] / len(clean['authors']):.1f}%) | {rate:,.0f} |", flush=True)
    base, ours = rows[("raw spans (baseline)", 13)], rows[("ours", 13)]
    print(f"\nn = 13: ours / baseline, wrapped copies found {ours['wrapped'] / max(base['wrapped'], 1):.1f}x, "
          f"inlined {ours['inlined'] / max(base['inlined'], 1):.1f}x")


if __name__ == "__main__":
    main()
