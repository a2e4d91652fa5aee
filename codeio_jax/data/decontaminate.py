"""Decontamination: drop records whose code overlaps a benchmark's programs.

A user who reports CRUXEval gains must show the training data does not hold
CRUXEval. A record is dropped when its code

  - shares a span of `n` (13) normalised tokens (normalize.py) with a
    benchmark program, identifiers renamed by their first appearance inside
    the span (so renaming a variable does not hide a copy); or
  - defines a function whose normalised syntax tree (names taken out,
    docstring dropped) equals a benchmark function's: a copy reformatted or
    renamed throughout.

Each drop is an error row naming the benchmark, its item and the shared span;
`summarize` counts the hits per benchmark for the report. Any JSONL file with a
code field is a benchmark (`Benchmark`); CRUXEval's 800 programs are the default.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from codeio_jax.data.normalize import IDENTIFIER, CodeTokenError, function_digests, normalized_tokens
from codeio_jax.records import LineError, read_jsonl

STAGE = "decontaminate"
DEFAULT_N = 13


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """A benchmark to keep out of the data: a JSONL file, one program per line."""

    path: str
    name: str | None = None  # default: the file's stem
    code_field: str = "code"
    id_field: str = "id"

    @property
    def label(self) -> str:
        return self.name or Path(self.path).stem


@dataclasses.dataclass(frozen=True)
class Hit:
    benchmark: str
    item: str
    match: str  # "span" or "ast"
    span: str  # the shared tokens as they read in the record's code (or the function's name)

    def reason(self, n: int) -> str:
        if self.match == "ast":
            return (f"contaminated: the function `{self.span}` is {self.benchmark} {self.item} "
                    "(the same syntax tree, names aside)")
        return f"contaminated: shares a {n}-token span with {self.benchmark} {self.item}: `{self.span}`"


@dataclasses.dataclass
class Index:
    """The benchmark programs' span hashes and function-tree hashes."""

    n: int
    spans: dict[bytes, tuple[str, str]] = dataclasses.field(default_factory=dict)
    trees: dict[bytes, tuple[str, str]] = dataclasses.field(default_factory=dict)
    items: dict[str, int] = dataclasses.field(default_factory=dict)  # programs indexed, per benchmark
    skipped: list[dict] = dataclasses.field(default_factory=list)  # benchmark lines that could not be used
    fingerprint: str = ""  # n, the benchmarks' settings and bytes: what a stage's output depends on

    def check(self, code: str) -> Hit | None:
        """The first overlap of `code` with a benchmark, or None; raises CodeTokenError."""
        tokens, originals = normalized_tokens(code)
        # A whole function copied is the stronger evidence: it is named first.
        for name, digest in function_digests(code):
            found = self.trees.get(digest)
            if found:
                return Hit(found[0], found[1], "ast", name)
        for start, digest in _span_digests(tokens, self.n):
            found = self.spans.get(digest)
            if found:
                return Hit(found[0], found[1], "span", " ".join(originals[start:start + self.n]))
        return None


class BenchmarkError(ValueError):
    """A benchmark that cannot be used at all (missing, or not one usable program)."""


def build_index(benchmarks: Sequence[Benchmark], n: int = DEFAULT_N) -> Index:
    if n < 2:
        raise ValueError(f"the span length n must be at least 2, got {n}")
    index = Index(n)
    content = hashlib.sha256(f"{n}".encode())
    spans: dict[bytes, tuple[str, str]] = {}
    shared: set[bytes] = set()  # spans of two programs or more: idioms, not any one program
    for benchmark in benchmarks:
        if not Path(benchmark.path).exists():
            raise BenchmarkError(f"the benchmark file {benchmark.path} does not exist")
        content.update(repr(dataclasses.astuple(benchmark)).encode() + Path(benchmark.path).read_bytes())
        label, used = benchmark.label, 0
        for line, item in _programs(benchmark):
            if isinstance(item, str):
                index.skipped.append({"benchmark": label, "line": line, "reason": item})
                continue
            item_id, code = item
            try:
                tokens, _ = normalized_tokens(code)
                trees = list(function_digests(code))
            except CodeTokenError as exc:
                index.skipped.append({"benchmark": label, "line": line, "reason": str(exc)})
                continue
            for _, digest in _span_digests(tokens, n):
                seen = spans.setdefault(digest, (label, item_id))
                if seen != (label, item_id):
                    shared.add(digest)
            for _, digest in trees:
                index.trees.setdefault(digest, (label, item_id))
            used += 1
        if not used:
            raise BenchmarkError(f"the benchmark file {benchmark.path} holds no usable program in its "
                                 f"`{benchmark.code_field}` field")
        index.items[label] = used
    index.spans = {digest: where for digest, where in spans.items() if digest not in shared}
    index.fingerprint = content.hexdigest()
    return index


def _programs(benchmark: Benchmark) -> Iterator[tuple[int, tuple[str, str] | str]]:
    for item in read_jsonl(benchmark.path):
        if isinstance(item, LineError):
            yield item.line, item.reason
            continue
        line, row = item
        code = row.get(benchmark.code_field) if isinstance(row, dict) else None
        if not isinstance(code, str):
            yield line, f"no `{benchmark.code_field}` text"
            continue
        yield line, (str(row.get(benchmark.id_field, f"line {line}")), code)


def _span_digests(tokens: list[str], n: int) -> Iterator[tuple[int, bytes]]:
    """(start, digest) of every n-token span, identifiers renamed by their first
    appearance in the span."""
    for start in range(len(tokens) - n + 1):
        names: dict[str, str] = {}
        parts = []
        for token in tokens[start:start + n]:
            if token.startswith(IDENTIFIER):
                token = names.setdefault(token, f"{IDENTIFIER}{len(names)}")
            parts.append(token)
        yield start, hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=12).digest()


def summarize(error_rows: Iterable[dict], index: Index) -> dict:
    """The report: programs indexed and records dropped per benchmark, with each hit."""
    report = {"n": index.n, "benchmarks": {name: {"programs": count, "records_dropped": 0, "hits": []}
                                           for name, count in index.items.items()},
              "benchmark_lines_skipped": index.skipped}
    for row in error_rows:
        found = report["benchmarks"].get(row.get("benchmark"))
        if found is not None:
            found["records_dropped"] += 1
            found["hits"].append({"id": row.get("id"), "item": row.get("benchmark_item"), "match": row.get("match"),
                                  "span": row.get("span")})
    return report
