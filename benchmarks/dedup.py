"""Deduplication (codeio_jax/data/dedup.py) on the CodeI/O authors' 464 records
with copies planted among them: how many copies it collapses, and how many
distinct records it merges by mistake.

Planted, one of each kind per record:
  - renamed: every name changed but methods' (tests/planted.py's renaming,
    kept a valid program), laid out again by ast.unparse, a comment on top:
    the same program;
  - edited: one statement of our own added at the top of `main_solution`: a
    near copy (most records are long enough for a 5-token-shingle Jaccard of 0.8).
The originals hold no copies (every merge among them is a false one).

The baseline, measured in the same run: records whose code text is equal
(sha256 of the text), the check one would write first.

Run: .venv/bin/python benchmarks/dedup.py
"""

import ast
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeio_jax.data import dedup  # noqa: E402
from tests.planted import Rename  # noqa: E402

AUTHORS = ROOT.parent / "shared" / "data" / "codeio" / "rawcode_1k_parsed.jsonl"


class RenameProgram(Rename):
    """tests/planted.py's renaming, made to keep a program that runs: classes
    renamed with their uses, methods and imported names kept (an attribute
    call or an import statement names them)."""

    def __init__(self):
        super().__init__()
        self.methods = set()

    def visit_ClassDef(self, node):
        node.name = self.new(node.name)
        self.methods |= {id(item) for item in node.body if isinstance(item, ast.FunctionDef)}
        self.generic_visit(node)
        return node

    def visit_FunctionDef(self, node):
        if id(node) in self.methods:
            self.generic_visit(node)
            return node
        return super().visit_FunctionDef(node)


def renamed(code):
    tree = ast.parse(code)
    renamer = RenameProgram()
    for node in ast.walk(tree):  # imported names stay: the import statement names them
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                renamer.names[name] = name
    return "# a copy\n" + ast.unparse(renamer.visit(tree))


def edited(code):
    lines = code.splitlines()
    at = next((i for i, line in enumerate(lines) if line.startswith("def main_solution")), None)
    if at is None:
        return None
    body = lines[at + 1]
    indent = body[:len(body) - len(body.lstrip())] or "    "
    return "\n".join([*lines[:at + 1], indent + "checked_steps = 0", *lines[at + 1:]]) + "\n"


def main():
    originals = [json.loads(line) for line in AUTHORS.read_text().splitlines()]
    for index, row in enumerate(originals):
        row["id"] = f"a{index:04d}"
    rows, planted = list(originals), {"renamed": {}, "edited": {}}
    for row in originals:
        for kind, make in (("renamed", renamed), ("edited", edited)):
            code = make(row["refcode"])
            if code is not None:
                copy_id = f"z-{kind}-{row['id']}"  # sorts after every original: the original is the one kept
                rows.append({**row, "id": copy_id, "refcode": code})
                planted[kind][copy_id] = row["id"]
    settings = dedup.Settings()
    started = time.perf_counter()
    signatures = [dedup.signature(line, row, settings) for line, row in enumerate(rows, start=1)]
    dropped = dedup.decide(signatures, settings)
    seconds = time.perf_counter() - started
    kept_for = {link.dropped[0]: dedup.kept_for(link, dropped)[0] for link in dropped.values()}
    texts: dict[str, str] = {}
    baseline = {}
    for row in rows:
        digest = hashlib.sha256(row["refcode"].encode()).hexdigest()
        if digest in texts:
            baseline[row["id"]] = texts[digest]
        else:
            texts[digest] = row["id"]
    print(f"the authors' {len(originals)} records, with {len(planted['renamed'])} renamed and "
          f"{len(planted['edited'])} edited copies planted; threshold {settings.threshold}, "
          f"{settings.num_perm} permutations, {settings.shingle}-token shingles\n")
    print(f"{'check':<34}{'renamed found':>16}{'edited found':>16}{'originals merged':>18}")
    for name, found in (("equal text (baseline)", baseline), ("ours", kept_for)):
        cells = []
        for kind in ("renamed", "edited"):
            hits = sum(found.get(copy_id) == original for copy_id, original in planted[kind].items())
            cells.append(f"{hits}/{len(planted[kind])} ({hits / len(planted[kind]):.1%})")
        merged = sum(1 for row in originals if row["id"] in found)
        print(f"{name:<34}{cells[0]:>16}{cells[1]:>16}{merged:>18}")
    print(f"\nours: {len(rows)} records signed and decided in {seconds:.1f} s "
          f"({len(rows) / seconds:.0f} records/s, 1 core)")


if __name__ == "__main__":
    main()
