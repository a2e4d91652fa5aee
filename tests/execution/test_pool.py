"""The host side of the sandbox: starting, serving, surviving a lost slot."""

import os
import signal
import threading
import time

import pytest

from codeio_jax.execution import Check, Limits, ProtectionsMissing, Sandbox, SandboxConfig, SandboxError


def test_a_slot_that_never_starts_is_an_error(tmp_path):
    fake = tmp_path / "python"  # an "interpreter" that never answers the handshake
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(SandboxError, match="did not start within"):
        Sandbox(SandboxConfig(workers=1, python=str(fake), start_timeout_s=0.5))
    assert time.monotonic() - started < 5


def test_a_slot_killed_from_outside_is_replaced():
    with Sandbox(SandboxConfig(workers=1)) as box:
        slot = box._slots[0]
        future = box.submit(Check("import time\ntime.sleep(5)", limits=Limits(timeout_s=10)))
        time.sleep(0.3)
        os.killpg(slot.process.pid, signal.SIGKILL)
        outcome = future.result(timeout=10)
        assert outcome.status.startswith("crashed:")
        assert "slot died" in outcome.message
        assert box.run(Check("x = 1")).status == "passed"


def test_concurrent_callers_get_their_own_outcomes(sandbox):
    results = {}

    def call(i):
        results[i] = sandbox.run(Check(f"def __v__():\n    return {i} * {i}", entry="__v__")).value

    threads = [threading.Thread(target=call, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {i: i * i for i in range(24)}


def test_results_must_be_json(sandbox):
    outcome = sandbox.run(Check("def __v__():\n    return {1, 2}", entry="__v__"))
    assert outcome.status == "error:TypeError" and "JSON-serializable" in outcome.message
    big = sandbox.run(Check("def __v__():\n    return 'x' * (2 << 20)", entry="__v__"))
    assert big.status == "error:ValueError" and "byte cap" in big.message


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match="timeout_s must be positive"):
        Limits(timeout_s=0)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        SandboxConfig(workers=0).worker_count()


def test_any_string_survives_the_trip(sandbox):
    source = "def __v__():\n    print('caf\\u00e9 \\ud800')\n    return ['\\ud800', 'caf\\u00e9', '\\x00']"
    outcome = sandbox.run(Check(source, entry="__v__"))
    assert outcome.status == "passed", outcome
    assert outcome.value == ["\ud800", "café", "\x00"]
    assert outcome.stdout.startswith("café ")


def test_a_required_protection_the_kernel_withholds_stops_the_sandbox():
    # With namespaces off, no slot has a network namespace: requiring one refuses to start.
    with pytest.raises(ProtectionsMissing, match="could not get network_namespace \\(required\\)"):
        Sandbox(SandboxConfig(workers=1, namespaces=False, require=("network_namespace", "no_new_privs")))
    with Sandbox(SandboxConfig(workers=1, namespaces=False, require=("no_new_privs",))) as box:
        assert box.run(Check("x = 1")).status == "passed"
    with pytest.raises(ValueError, match="unknown protections \\['network'\\]"):
        SandboxConfig(require=("network",))
