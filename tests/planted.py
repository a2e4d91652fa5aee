"""Benchmark programs disguised as a contaminator would: renamed, reformatted,
wrapped or inlined (tests/data/test_decontaminate.py, benchmarks/decontamination.py)."""

import ast
import builtins


class Rename(ast.NodeTransformer):
    """Every function, argument and variable to renamed_0, renamed_1, ...; a
    builtin stays unless the code binds its name."""

    def __init__(self):
        self.names = {}

    def new(self, name):
        return self.names.setdefault(name, f"renamed_{len(self.names)}")

    def visit_Name(self, node):
        if node.id not in dir(builtins) or node.id == "_" or node.id in self.names:
            node.id = self.new(node.id)
        return node

    def visit_arg(self, node):
        node.arg = self.new(node.arg)
        return node

    def visit_FunctionDef(self, node):
        node.name = self.new(node.name)
        self.generic_visit(node)
        return node


def wrapped(code: str) -> str:
    """Renamed throughout, reformatted by ast.unparse, beside a helper and a main_solution that calls it."""
    return ("import math\n\n\ndef helper(x):\n    return x\n\n\n" + ast.unparse(Rename().visit(ast.parse(code)))
            + "\n\n\ndef main_solution(**kwargs):\n    return renamed_0(**kwargs)\n")


def inlined(code: str) -> str:
    """Renamed, its body made main_solution's, a line of our own put in its middle."""
    tree = Rename().visit(ast.parse(code))
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef))
    function.name = "main_solution"
    function.body.insert(len(function.body) // 2, ast.parse("checked_steps = 0").body[0])
    return "import math\n\n\n" + ast.unparse(tree)
