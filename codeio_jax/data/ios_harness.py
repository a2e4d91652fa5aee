"""What the `ios` stage runs in the sandbox: its settings, the per-record seed,
and the two fixed harnesses (preludes, compiled once per slot) that call a
record's input generator or replay its recorded inputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from codeio_jax.execution import Check, Limits
from codeio_jax.records import UnifiedRecord


@dataclasses.dataclass(frozen=True)
class SizeLimits:
    """The paper's limits on a kept pair (all strict upper bounds)."""

    pair_bytes: int = 1024
    container_items: int = 20
    string_chars: int = 100
    scalar_bytes: int = 128


@dataclasses.dataclass(frozen=True)
class IOSettings:
    seed: int = 0
    max_calls: int = 1000
    max_pairs: int = 10
    timeout_s: float = 20.0
    memory_mb: int = 2048
    sizes: SizeLimits = SizeLimits()
    determinism: bool = True  # recheck every pair in another world (data/determinism.py)
    deterministic_min_pairs: int = 2  # a record with a pair that changed needs this many that held

    def __post_init__(self):
        if self.max_calls < 1 or self.max_pairs < 1 or self.deterministic_min_pairs < 1:
            raise ValueError("max_calls, max_pairs and deterministic_min_pairs must be at least 1")


def record_seed(seed: int, record_id: str) -> int:
    """The seed of one record's generator: stable across runs, machines and order."""
    digest = hashlib.sha256(f"{seed}\0{record_id}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big")


def generator_check(record: UnifiedRecord, settings: IOSettings, limits: Limits | None = None) -> Check:
    """The record's code and generator, run by the fixed harness `_GENERATE`
    (a prelude: compiled once per sandbox slot) with this record's parameters."""
    params = {"seed": record_seed(settings.seed, record.id), "max_calls": settings.max_calls,
              "max_pairs": settings.max_pairs, "budget_s": 0.8 * settings.timeout_s,
              "funcname": record.funcname, "sizes": dataclasses.asdict(settings.sizes)}
    return Check(_with_params(record.refcode, record.input_generator or "", params),
                 entry="__codeio_ios__", limits=limits, prelude=_GENERATE)


def replay_check(record: UnifiedRecord, settings: IOSettings, limits: Limits | None = None) -> Check:
    """The record's code, run by the fixed harness `_REPLAY` on its recorded inputs."""
    params = {"seed": record_seed(settings.seed, record.id), "funcname": record.funcname,
              "inputs": [pair.input for pair in record.ios]}
    return Check(_with_params(record.refcode, params), entry="__codeio_replay__", limits=limits,
                 prelude=_REPLAY)


def _with_params(*parts) -> str:
    *code, params = parts
    text = json.dumps(params, ensure_ascii=False)
    return "\n\n".join([*code, f"__codeio_params__ = {text!r}\n"])


# The harnesses below run inside the sandbox as preludes: the record's code then
# defines its functions and `__codeio_params__` (JSON text) in the same namespace.

# The clock a record's code reads is virtual: each reading of `time.time`,
# `monotonic`, `perf_counter`, `process_time`, `thread_time` (and their _ns forms) or of
# `datetime.now`, `utcnow`, `date.today` advances a counter by one tick from a
# fixed epoch. Code that reports how long it took or what time it is then
# records the same pairs on every run and every machine; the determinism check
# reads another epoch at another tick and drops them. The harness keeps the real
# monotonic clock for its own deadline. Patched before the record's code runs,
# so its `from time import time` takes the virtual one.
FIRST_WORLD_EPOCH_S = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
FIRST_WORLD_TICK_S = 0.001

_CLOCK = '''
import time as __codeio_time
import datetime as __codeio_datetime

def __codeio_virtual_clock__(epoch_ns, tick_ns):
    real_monotonic = __codeio_time.monotonic
    readings = [0]

    def elapsed_ns():
        readings[0] += 1
        return readings[0] * tick_ns

    def wall_ns():
        return epoch_ns + elapsed_ns()

    def steady_ns():  # monotonic and perf_counter: from 1000 s, as after a machine's start
        return 1000 * 10 ** 9 + elapsed_ns()

    patched = {"time": lambda: wall_ns() / 1e9, "time_ns": wall_ns,
               "monotonic": lambda: steady_ns() / 1e9, "monotonic_ns": steady_ns,
               "perf_counter": lambda: steady_ns() / 1e9, "perf_counter_ns": steady_ns,
               "process_time": lambda: elapsed_ns() / 1e9, "process_time_ns": elapsed_ns,
               "thread_time": lambda: elapsed_ns() / 1e9, "thread_time_ns": elapsed_ns}
    for name, clock in patched.items():
        setattr(__codeio_time, name, clock)
    # Plain names for the class bodies below: a class body mangles `__name`.
    time_module, dt = __codeio_time, __codeio_datetime

    class VirtualDatetime(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls.fromtimestamp(time_module.time(), tz)

        @classmethod
        def today(cls):
            return cls.fromtimestamp(time_module.time())

        @classmethod
        def utcnow(cls):
            return cls.fromtimestamp(time_module.time(), dt.timezone.utc).replace(tzinfo=None)

    class VirtualDate(dt.date):
        @classmethod
        def today(cls):
            return cls.fromtimestamp(time_module.time())

    dt.datetime, dt.date = VirtualDatetime, VirtualDate
    return real_monotonic

__codeio_real_monotonic__ = __codeio_virtual_clock__(__EPOCH_NS__, __TICK_NS__)
'''


def clock_prelude(epoch_s: float, tick_s: float) -> str:
    """The virtual clock (see _CLOCK) at this epoch and tick, as prelude text."""
    if tick_s <= 0:
        raise ValueError(f"the virtual clock's tick must be positive, got {tick_s}")
    return _CLOCK.replace("__EPOCH_NS__", str(round(epoch_s * 1e9))).replace("__TICK_NS__", str(round(tick_s * 1e9)))


# Both harnesses (and the determinism check's) seed `random` and, where the record's code imported it, numpy's
# global generator: code that draws unseeded random numbers then records the same
# pairs on every run (the determinism check, in another world, drops them).
SEED_GENERATORS = '''
def __codeio_seed_generators__(seed):
    import random, sys
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % (1 << 32))
'''

_GENERATE = clock_prelude(FIRST_WORLD_EPOCH_S, FIRST_WORLD_TICK_S) + SEED_GENERATORS + '''
def __codeio_too_big__(value, sizes):
    """Why `value` breaks the size limits, or None."""
    kind = type(value)
    if kind is str:
        if len(value) >= sizes["string_chars"]:
            return "string of %d+ characters" % sizes["string_chars"]
        return None
    if kind in (list, tuple, set, dict):
        if len(value) >= sizes["container_items"]:
            return "container of %d+ items" % sizes["container_items"]
        for item in (value.items() if kind is dict else value):
            found = __codeio_too_big__(item, sizes)
            if found:
                return found
        return None
    if kind is bool or value is None:
        return None
    import json
    if len(json.dumps(value)) >= sizes["scalar_bytes"]:
        return "scalar of %d+ bytes" % sizes["scalar_bytes"]
    return None


def __codeio_ios__():
    import json
    params = json.loads(__codeio_params__)
    sizes, funcname = params["sizes"], params["funcname"]
    solve, generate = globals().get(funcname), globals().get("input_generator")
    for name, found in ((funcname, solve), ("input_generator", generate)):
        if not callable(found):
            return {"error": "the record's code does not define a function `%s`" % name}
    __codeio_seed_generators__(params["seed"])
    deadline = __codeio_real_monotonic__() + params["budget_s"]
    pairs, seen, rejected, calls = [], set(), {}, 0

    def reject(reason):
        rejected[reason] = rejected.get(reason, 0) + 1

    while (calls < params["max_calls"] and len(pairs) < params["max_pairs"]
           and __codeio_real_monotonic__() < deadline):
        calls += 1
        try:
            kwargs = generate()
        except Exception as exc:
            return {"error": "input_generator raised %s: %s" % (type(exc).__name__, str(exc)[:300])}
        if not isinstance(kwargs, dict):
            return {"error": "input_generator must return a dict of keyword arguments, got %s"
                             % type(kwargs).__name__}
        try:
            input_text = json.dumps(kwargs, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError):
            reject("input not JSON-serializable")
            continue
        if input_text in seen:
            reject("duplicate input")
            continue
        seen.add(input_text)
        kwargs = json.loads(input_text)
        too_big = __codeio_too_big__(kwargs, sizes)
        if too_big:
            reject("input has a " + too_big)
            continue
        try:
            output = solve(**json.loads(input_text))
        except Exception as exc:
            reject(funcname + " raised " + type(exc).__name__)
            continue
        if output is None:
            reject("output is None")
            continue
        try:
            output_text = json.dumps(output, allow_nan=False)
        except (TypeError, ValueError):
            reject("output not JSON-serializable")
            continue
        output = json.loads(output_text)
        too_big = __codeio_too_big__(output, sizes)
        if too_big:
            reject("output has a " + too_big)
            continue
        # The size of json.dumps({"input": ..., "output": ...}), ASCII-escaped
        # so characters are bytes: the two texts and 23 characters around them.
        if len(input_text) + len(output_text) + 23 >= sizes["pair_bytes"]:
            reject("pair of %d bytes or more" % sizes["pair_bytes"])
            continue
        pairs.append({"input": kwargs, "output": output})
    return {"pairs": pairs, "calls": calls, "rejected": rejected}
'''

_REPLAY = clock_prelude(FIRST_WORLD_EPOCH_S, FIRST_WORLD_TICK_S) + SEED_GENERATORS + '''
def __codeio_replay__():
    import json
    params = json.loads(__codeio_params__)
    solve = globals().get(params["funcname"])
    if not callable(solve):
        raise NameError("the record's code does not define a function `%s`" % params["funcname"])
    __codeio_seed_generators__(params["seed"])
    results = []
    for kwargs in params["inputs"]:
        try:
            output = json.loads(json.dumps(solve(**kwargs), allow_nan=False))
            results.append([True, output])
        except Exception as exc:
            results.append([False, type(exc).__name__])
    return results
'''
