"""Decontamination: drop records whose code overlaps a benchmark's programs.

A user who reports CRUXEval gains must show the training data does not hold
CRUXEval. A record is dropped when its code

  - shares a span of `n` (13) normalised tokens with a benchmark program:
    comments, line breaks and indentation are gone, identifiers are renamed by
    their first appearance inside the span (so renaming a variable does not hide
    a copy), Python's keywords and builtins and every literal are kept (a
    literal is written as Python would print it, so quoting does not matter); or
  - defines a function whose normalised syntax tree (identifiers renamed,
    docstring dropped) equals a benchmark function's: a copy reformatted or
    renamed throughout.

Each drop is an error row naming the benchmark, its item and the shared span;
`summarize` counts the hits per benchmark for the report. Any JSONL file with a
code field is a benchmark (`Benchmark`); CRUXEval's 800 programs are the default.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import hashlib
import io
import keyword
import threading
import tokenize
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from codeio_jax.records import LineError, read_jsonl

STAGE = "decontaminate"
DEFAULT_N = 13
# Keywords and builtins stay as written; everything else is an identifier. Soft
# keywords (`match`, `case`, `_`, `type`) are identifiers far more often than not.
_KEPT_NAMES = (frozenset(keyword.kwlist) | frozenset(dir(builtins))) - frozenset(keyword.softkwlist)
_SKIPPED_TOKENS = frozenset({tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                             tokenize.ENCODING, tokenize.ENDMARKER})
_IDENTIFIER = "\0id"
# CPython 3.11's parser is not safe to enter from two threads at once ("AST
# constructor recursion depth mismatch"), and Beam's DirectRunner runs DoFns on threads.
_PARSING = threading.Lock()
# Brackets and separators carry little of a program: without them a span of n
# tokens covers two or three lines of code, not one.
_PUNCTUATION = frozenset("()[]{},:;.")


class CodeTokenError(ValueError):
    """Code that Python's tokenizer or parser does not take."""


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
        for name, digest in _function_digests(code):
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
                trees = list(_function_digests(code))
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
            yield line, f"line {line}: no `{benchmark.code_field}` text"
            continue
        yield line, (str(row.get(benchmark.id_field, f"line {line}")), code)


def normalized_tokens(code: str) -> tuple[list[str], list[str]]:
    """The normalised tokens of `code` (identifiers as a placeholder) and, beside
    them, the tokens as written. Function and class headers are left out: with
    their names renamed, `def f(a, b):` is the same in every program of that
    arity, and a whole function copied is found by its syntax tree instead."""
    tokens, originals = [], []
    previous, header, depth = None, False, 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            if token.type in _SKIPPED_TOKENS:
                continue
            text, after = token.string, previous
            previous = text
            if token.type == tokenize.NAME and text in ("def", "class"):
                header, depth = True, 0
            if header:
                depth += text in "([{" if token.type == tokenize.OP else 0
                depth -= text in ")]}" if token.type == tokenize.OP else 0
                header = not (token.type == tokenize.OP and text == ":" and depth == 0)
                continue
            if token.type == tokenize.OP and text in _PUNCTUATION:
                continue
            if token.type == tokenize.NAME and text not in _KEPT_NAMES and after != ".":
                tokens.append(_IDENTIFIER + text)
            elif token.type in (tokenize.STRING, tokenize.NUMBER):
                tokens.append(_literal(text))
            else:
                tokens.append(text)
            originals.append(text)
    except (tokenize.TokenError, SyntaxError, IndentationError) as exc:
        raise CodeTokenError(f"the code cannot be tokenised: {exc}") from None
    return tokens, originals


def _literal(text: str) -> str:
    try:
        return repr(ast.literal_eval(text))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text  # an f-string, a bytes literal with escapes Python rejects, a huge number


def _span_digests(tokens: list[str], n: int) -> Iterator[tuple[int, bytes]]:
    """(start, digest) of every n-token span, identifiers renamed by their first
    appearance in the span."""
    for start in range(len(tokens) - n + 1):
        names: dict[str, str] = {}
        parts = []
        for token in tokens[start:start + n]:
            if token.startswith(_IDENTIFIER):
                token = names.setdefault(token, f"{_IDENTIFIER}{len(names)}")
            parts.append(token)
        yield start, hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=12).digest()


class _Renamer(ast.NodeTransformer):
    """Identifiers to v0, v1, ... by first appearance; builtins kept unless taken
    as an argument; docstrings dropped."""

    def __init__(self):
        self.names: dict[str, str] = {}

    def rename(self, name: str, bound: bool = False) -> str:
        # A builtin's name taken as an argument (`def f(str):`) is a local like any other.
        if name in _KEPT_NAMES and not bound and name not in self.names:
            return name
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_Name(self, node):
        node.id = self.rename(node.id)
        return node

    def visit_arg(self, node):
        node.arg = self.rename(node.arg, bound=True)
        node.annotation = None
        return node

    def visit_FunctionDef(self, node):
        node.name = self.rename(node.name)
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        node.returns = None
        self.generic_visit(node)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef


def _function_digests(code: str) -> Iterator[tuple[str, bytes]]:
    """(name, digest of its normalised tree) of every function `code` defines."""
    with _PARSING:
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
            raise CodeTokenError(f"the code does not parse: {exc}") from None
        functions = [(node.name, _copy(node)) for node in ast.walk(tree)
                     if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for name, node in functions:
        normal = _Renamer().visit(node)
        yield name, hashlib.blake2b(ast.dump(normal).encode("utf-8", "surrogatepass"), digest_size=12).digest()


def _copy(node: ast.AST) -> ast.AST:
    return ast.parse(ast.unparse(node)).body[0]


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
