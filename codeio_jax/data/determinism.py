"""Determinism: a kept input/output pair must give the same output in another world.

The `ios` stage records each pair from one run of the record's code. A program
whose output depends on the clock, on unseeded randomness, on the order of a
set of strings, or on state it keeps between calls (a global counter, a memo
table) records a "truth" that is not one, and the data would teach it. So every
record with pairs is run again, in a second sandbox whose slots have another
PYTHONHASHSEED, and there:

  - `random` and numpy's global generator are seeded with another seed;
  - the virtual clock both worlds read (ios_harness.clock_prelude) starts
    about 11.6 days later and each reading advances it half as far;
  - the recorded inputs are called in reverse order in one namespace (state
    carried between calls shows), then each alone, in a namespace of its own
    where the record's code has just run afresh.

A pair is kept when both calls give its recorded output under the verifier's
comparison (verify/compare.py). The two calls reseed `random` and numpy
differently, so code drawing from their global generators without seeding them
meets three streams in all; such a record keeps its pairs only when not one of
them changed (a randomised quickselect), since where one did, the others agree
by chance (the maximum of 98 draws below 100 is 99 two times in three). Dict
order cannot be perturbed: the language fixes it to insertion order.
"""

from __future__ import annotations

import dataclasses
import json

from codeio_jax.data.ios_harness import FIRST_WORLD_EPOCH_S, FIRST_WORLD_TICK_S, SEED_GENERATORS, clock_prelude
from codeio_jax.execution import Check, Limits, Sandbox, SandboxConfig
from codeio_jax.verify.compare import values_match

# The first run's slots have hash seed 0 (execution/pool.py).
RECHECK_HASH_SEED = 1
RECHECK_CLOCK_SHIFT_S = 1_000_003.25  # about 11.6 days later
_SHOWN_VALUE_CHARS = 160
_SHOWN_PAIRS = 2


def recheck_sandbox(config: SandboxConfig) -> Sandbox:
    """The second world's sandbox: the first one's settings, another hash seed."""
    return Sandbox(dataclasses.replace(config, hash_seed=RECHECK_HASH_SEED))


def recheck_check(funcname: str, refcode: str, pairs: list[dict], seed: int, limits: Limits) -> Check:
    """The record's code, run by the fixed harness `_RECHECK` on the inputs of its pairs."""
    params = {"seed": seed, "funcname": funcname, "code": refcode,
              "inputs": [pair["input"] for pair in pairs], "budget_s": 0.8 * limits.timeout_s}
    text = json.dumps(params, ensure_ascii=False)
    return Check(f"{refcode}\n\n__codeio_params__ = {text!r}\n", entry="__codeio_recheck__", limits=limits,
                 prelude=_RECHECK)


@dataclasses.dataclass(frozen=True)
class Rechecked:
    """The pairs that held, with counts; `error` when the record must go."""

    pairs: list[dict]
    stats: dict
    error: str | None = None


def judge(pairs: list[dict], outcome, min_pairs: int) -> Rechecked:
    """Keep the pairs whose every recheck call gave the recorded output. A record
    is an error when a pair differed and fewer than `min_pairs` held, or when
    the recheck itself could not run."""
    if not outcome.passed:
        return Rechecked([], {}, f"the determinism check did not finish: {outcome.status}: {outcome.message}"[:500])
    results = outcome.value
    if not isinstance(results, list) or len(results) != len(pairs):
        return Rechecked([], {}, "the record's code interfered with the determinism check's harness")
    kept, differing, unchecked, unseeded = [], [], 0, []
    for pair, result in zip(pairs, results):
        if result is None:  # the check's time ran out before this pair
            unchecked += 1
            continue
        for how in ("reversed", "alone"):
            ok, got, *drew = result[how]
            if drew and drew[0] and not (unseeded and unseeded[-1][0] is pair):
                unseeded.append((pair, drew[0]))  # once a pair
            if not ok or not values_match(got, pair["output"]):
                differing.append((pair, how, ok, got))
                break
        else:
            kept.append(pair)
    stats = {"checked": len(pairs) - unchecked, "held": len(kept), "differed": len(differing),
             "unchecked": unchecked}
    if unseeded:
        stats["unseeded"] = len(unseeded)
        if differing:
            # Randomness that shows in an output: no pair of it can be trusted, even one that agreed.
            names = unseeded[0][1]
            return Rechecked([], stats, f"non-deterministic: the code draws from "
                                        f"{' and '.join(f'`{n}`' for n in names)} without seeding it and "
                                        f"{len(differing)} of {len(pairs)} outputs changed with the seed "
                                        f"(e.g. input {_short(differing[0][0]['input'])}): its outputs are chance")
    if differing and len(kept) < min_pairs:
        return Rechecked([], stats, _non_deterministic(differing, len(pairs), len(kept), min_pairs))
    if not kept:
        return Rechecked([], stats, f"the determinism check ran out of time before any of {len(pairs)} pairs")
    return Rechecked(kept, stats)


def _non_deterministic(differing: list, total: int, held: int, min_pairs: int) -> str:
    shown = []
    for pair, how, ok, got in differing[:_SHOWN_PAIRS]:
        when = ("called after the others, in reverse order" if how == "reversed"
                else "called alone, on a fresh run of the code")
        result = f"gave {_short(got)}" if ok else f"raised {got}"
        shown.append(f"input {_short(pair['input'])} recorded {_short(pair['output'])}, {when} {result}")
    return (f"non-deterministic: {len(differing)} of {total} pairs gave another output in another world "
            f"(another seed, hash seed and clock), {held} held (at least {min_pairs} needed): "
            + "; ".join(shown))


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=repr)
    return text if len(text) <= _SHOWN_VALUE_CHARS else text[:_SHOWN_VALUE_CHARS] + "..."


# Runs inside the sandbox as a prelude, before the record's code: the virtual
# clock first (ios_harness.clock_prelude), at another epoch and half the tick, then
# the generators' seeding both worlds share.
_RECHECK = clock_prelude(FIRST_WORLD_EPOCH_S + RECHECK_CLOCK_SHIFT_S, FIRST_WORLD_TICK_S / 2) + SEED_GENERATORS + '''

import random as __codeio_random
__codeio_seeded__ = [False]


def __codeio_patch_seed__():
    # Patched before the record's code runs, so its `from random import seed` is this one.
    real = __codeio_random.seed

    def seed(*args, **kwargs):
        __codeio_seeded__[0] = True
        return real(*args, **kwargs)

    __codeio_random.seed = seed

__codeio_patch_seed__()


def __codeio_recheck__():
    import json, random, sys
    params = json.loads(__codeio_params__)
    funcname, inputs = params["funcname"], params["inputs"]
    deadline = __codeio_real_monotonic__() + params["budget_s"]

    def reseed(offset):
        # Each pass its own seed: code that draws unseeded randomness meets
        # three streams in all (the first world's and these two).
        __codeio_seed_generators__(params["seed"] + offset)

    def states():
        numpy = sys.modules.get("numpy")
        state = numpy.random.get_state() if numpy is not None else None
        return random.getstate(), None if state is None else (state[1].tobytes(), state[2])

    def call(solve, kwargs):
        # A draw from the global generators the call did not seed makes the
        # record random, whether or not this world's outputs happen to agree.
        before, numpy_before = states()
        __codeio_seeded__[0] = False
        numpy = sys.modules.get("numpy")
        numpy_seed = numpy.random.seed if numpy is not None else None
        if numpy is not None:
            def seeding(*args, **kwargs):
                __codeio_seeded__[0] = True
                return numpy_seed(*args, **kwargs)
            numpy.random.seed = seeding
        try:
            result = [True, json.loads(json.dumps(solve(**json.loads(json.dumps(kwargs))), allow_nan=False))]
        except Exception as exc:
            result = [False, type(exc).__name__]
        finally:
            if numpy is not None:
                numpy.random.seed = numpy_seed
        after, numpy_after = states()
        drew = [] if __codeio_seeded__[0] else [name for name, a, b in (
            ("random", before, after), ("numpy.random", numpy_before, numpy_after)) if a is not None and a != b]
        return result + [drew]

    results = [None] * len(inputs)
    reseed(0)
    solve = globals().get(funcname)
    if not callable(solve):
        raise NameError("the record's code does not define a function `%s`" % funcname)
    for index in reversed(range(len(inputs))):
        if __codeio_real_monotonic__() > deadline:
            break
        results[index] = {"reversed": call(solve, inputs[index])}
    code = compile(params["code"], "<record>", "exec")
    for index, kwargs in enumerate(inputs):
        if results[index] is None:
            continue
        if __codeio_real_monotonic__() > deadline:
            results[index] = None
            continue
        namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        reseed(1)
        try:
            exec(code, namespace)
            results[index]["alone"] = call(namespace[funcname], kwargs)
        except Exception as exc:
            results[index]["alone"] = [False, type(exc).__name__]
    return results
'''
