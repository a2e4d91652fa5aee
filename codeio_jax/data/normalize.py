"""Code as a comparison sees it: tokens and syntax trees with the names taken out.

Decontamination (decontaminate.py) and deduplication (dedup.py) ask the same
question of two programs, "is one a copy of the other, whatever it was renamed
to or however it was laid out?", so they read code the same way:

  - tokens: comments, line breaks and indentation gone, brackets and separators
    gone (they carry little of a program), every literal written as Python
    would print it (so quoting does not matter), Python's keywords and builtins
    kept, every other name marked as an identifier (its text kept beside, for
    whoever renames);
  - trees: the syntax tree with identifiers renamed v0, v1, ... by first
    appearance, docstrings and annotations dropped, as a digest.
"""

from __future__ import annotations

import ast
import builtins
import copy
import hashlib
import io
import keyword
import tokenize
from typing import Iterator

from codeio_jax import syntax

# The prefix of an identifier's token: "\0id" + its name.
IDENTIFIER = "\0id"
# Keywords and builtins stay as written; everything else is an identifier. Soft
# keywords (`match`, `case`, `_`, `type`) are identifiers far more often than not.
_KEPT_NAMES = (frozenset(keyword.kwlist) | frozenset(dir(builtins))) - frozenset(keyword.softkwlist)
_SKIPPED_TOKENS = frozenset({tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                             tokenize.ENCODING, tokenize.ENDMARKER})
# Brackets and separators carry little of a program: without them a span of 13
# tokens covers two or three lines of code, not one.
_PUNCTUATION = frozenset("()[]{},:;.")


class CodeTokenError(ValueError):
    """Code that Python's tokenizer or parser does not take."""


def normalized_tokens(code: str) -> tuple[list[str], list[str]]:
    """The normalised tokens of `code` and, beside them, the tokens as written.
    Function and class headers are left out: with their names renamed,
    `def f(a, b):` is the same in every program of that arity."""
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
                tokens.append(IDENTIFIER + text)
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


class _Renamer(ast.NodeTransformer):
    """Identifiers to v0, v1, ... by first appearance; builtins kept unless the
    code binds their name (a function, class, argument or variable of its own
    called `sum` is the code's own, before its definition as after it);
    docstrings and annotations dropped."""

    def __init__(self, bound: frozenset[str] = frozenset()):
        self.names: dict[str, str] = {}
        self.bound = bound

    def rename(self, name: str) -> str:
        if name in _KEPT_NAMES and name not in self.bound and name not in self.names:
            return name
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_Name(self, node):
        node.id = self.rename(node.id)
        return node

    def visit_arg(self, node):
        node.arg = self.rename(node.arg)
        node.annotation = None
        return node

    def visit_FunctionDef(self, node):
        node.name = self.rename(node.name)
        node.returns = None
        _drop_docstring(node)
        self.generic_visit(node)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        node.name = self.rename(node.name)
        _drop_docstring(node)
        self.generic_visit(node)
        return node

    def visit_Module(self, node):
        _drop_docstring(node)
        self.generic_visit(node)
        return node


def _drop_docstring(node) -> None:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        node.body = body[1:] or [ast.Pass()]


def _parsed(code: str) -> ast.Module:
    try:
        return syntax.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        raise CodeTokenError(f"the code does not parse: {exc}") from None


def _bound_names(node: ast.AST) -> frozenset[str]:
    bound = set()
    for item in ast.walk(node):
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(item.name)
        elif isinstance(item, ast.arg):
            bound.add(item.arg)
        elif isinstance(item, ast.Name) and isinstance(item.ctx, ast.Store):
            bound.add(item.id)
    return frozenset(bound)


def _digest(node: ast.AST) -> bytes:
    normal = _Renamer(_bound_names(node)).visit(node)
    return hashlib.blake2b(ast.dump(normal).encode("utf-8", "surrogatepass"), digest_size=12).digest()


def function_digests(code: str) -> Iterator[tuple[str, bytes]]:
    """(name, digest of its normalised tree) of every function `code` defines;
    raises CodeTokenError."""
    tree = _parsed(code)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, _digest(copy.deepcopy(node))


def module_digest(code: str) -> bytes:
    """The digest of the whole program's normalised tree: equal for two programs
    that differ only in names, layout, comments, docstrings and annotations;
    raises CodeTokenError."""
    return _digest(_parsed(code))
