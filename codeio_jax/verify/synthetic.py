"""Deterministic CRUXEval generations that look like a model's, for the demo,
the benchmarks and the tests.

`model_like_generations`: per sample, a skill level decides how many of the 10
generations are the true answer (written the way models write it, sometimes
with other spacing or quotes, now and then as an expression) and how many are
plausible mistakes (an element off by one, a dropped or swapped item, a changed
character), which repeat the way sampled mistakes do.
`perturbed_generations`: one plausible mistake per sample."""

import ast
import random


def mutate(value, rng):
    """A plausible wrong value near `value`."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + rng.choice([-1, 1, 2])
    if isinstance(value, float):
        return round(value * rng.choice([0.5, 1.1, 2.0]), 3)
    if isinstance(value, str):
        if not value:
            return rng.choice(["a", " "])
        i = rng.randrange(len(value))
        choice = rng.randrange(3)
        if choice == 0:
            return value[:i] + value[i + 1:]
        if choice == 1:
            return value.swapcase() if value.swapcase() != value else value + value[-1]
        return value[:i] + "x" + value[i:]
    if isinstance(value, (list, tuple)):
        items = list(value)
        if not items:
            items = [0]
        else:
            choice = rng.randrange(3)
            i = rng.randrange(len(items))
            if choice == 0:
                items.pop(i)
            elif choice == 1:
                items[i] = mutate(items[i], rng)
            else:
                items.reverse() if len(set(map(repr, items))) > 1 else items.append(items[0])
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict):
        if not value:
            return {"a": 1}
        key = rng.choice(list(value))
        changed = dict(value)
        changed[key] = mutate(value[key], rng)
        return changed
    if value is None:
        return rng.choice([0, "", []])
    return None


def restyle(text, rng, mode):
    """The same value written another way; now and then as an expression rather
    than a literal (`'ab' + 'c'`), as models sometimes answer."""
    styles = [text, text.replace(", ", ","), text.replace("'", '"') if '"' not in text else text]
    text = rng.choice(styles)
    if mode == "output" and rng.random() < 0.05:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(value, (str, list)) and len(value) > 1:
            cut = len(value) // 2
            return f"{value[:cut]!r} + {value[cut:]!r}"
    return text


def _mutate_one_argument(args, rng):
    """The argument list, as call text, with one argument made plausibly wrong."""
    args = list(args)
    if args:
        k = rng.randrange(len(args))
        args[k] = mutate(args[k], rng)
    return ", ".join(repr(a) for a in args)


def generations_for(sample, mode, rng, n=10):
    skill = rng.choice([0.0, 0.2, 0.5, 0.8, 1.0])
    truth_literal = sample["output"] if mode == "output" else sample["input"]
    try:
        truth = ast.literal_eval(truth_literal if mode == "output" else f"[{truth_literal}]")
    except (ValueError, SyntaxError):
        truth = None
    wrong_pool = []
    for _ in range(3):
        if truth is None:
            wrong_pool.append("None")
        elif mode == "output":
            wrong_pool.append(repr(mutate(truth, rng)))
        else:
            wrong_pool.append(_mutate_one_argument(truth, rng))
    gens = []
    for _ in range(n):
        text = truth_literal if rng.random() < skill else rng.choice(wrong_pool)
        text = restyle(text, rng, mode)
        gens.append(text if mode == "output" else f"f({text})")
    return gens


def model_like_generations(samples, mode, seed=0, n=10):
    """{sample id: n generations}; `samples` are rows with code, input, output, id."""
    rng = random.Random(f"{seed}-{mode}")
    return {s["id"]: generations_for(s, mode, rng, n) for s in samples}


def perturbed_generations(samples, mode, seed=0):
    """{sample id: [one wrong answer]}."""
    rng = random.Random(f"{seed}-{mode}-perturbed")
    out = {}
    for s in samples:
        if mode == "output":
            out[s["id"]] = [repr(mutate(ast.literal_eval(s["output"]), rng))]
        else:
            try:
                args = ast.literal_eval(f"[{s['input']}]")
            except (ValueError, SyntaxError):  # a few inputs are expressions
                args = [None]
            out[s["id"]] = [f"f({_mutate_one_argument(args, rng)})"]
    return out
