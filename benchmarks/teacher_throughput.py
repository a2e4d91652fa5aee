"""`respond` throughput of the OpenAI-compatible teacher against a slow server.

A loopback server waits 200 ms per request, as a remote model would. The
baseline is the same teacher with one request in flight at a time (the plain
loop of the authors' scripts); then the concurrency limit is raised. The target
is at least 0.9 x (limit / 0.2 s) requests per second.

Run: .venv/bin/python benchmarks/teacher_throughput.py
"""

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeio_jax.teachers.openai_compatible import OpenAICompatibleTeacher  # noqa: E402
from tests.teachers.chat_server import ChatServer  # noqa: E402

DELAY_S = 0.2


def measure(server, concurrency, count):
    conversations = [[{"role": "user", "content": f"c{concurrency} q{i}"}] for i in range(count)]
    with OpenAICompatibleTeacher(server.base_url, "bench", api_key_env=None,
                                 max_concurrency=concurrency) as teacher:
        started = time.perf_counter()
        replies = teacher.reply(conversations)
        elapsed = time.perf_counter() - started
    assert all(r.ok for r in replies)
    return count / elapsed


def main():
    with ChatServer(delay_s=DELAY_S) as server:
        base = measure(server, 1, 15)
        print(f"server delay {DELAY_S * 1000:.0f} ms per request\n")
        print(f"{'concurrency':>11}{'requests/s':>12}{'ideal':>8}{'of ideal':>10}{'x sequential':>14}")
        print(f"{1:>11}{base:>12.1f}{1 / DELAY_S:>8.1f}{base * DELAY_S:>9.0%}{1.0:>13.1f}x")
        for concurrency in (8, 16, 32):
            rate = measure(server, concurrency, concurrency * 10)
            ideal = concurrency / DELAY_S
            print(f"{concurrency:>11}{rate:>12.1f}{ideal:>8.1f}{rate / ideal:>9.0%}{rate / base:>13.1f}x")


if __name__ == "__main__":
    main()
