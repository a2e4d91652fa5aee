"""`respond` throughput with the OpenAI-compatible teacher against a slow server.

A loopback server waits 200 ms per request, as a remote model would. The
baseline is one request in flight at a time (the plain loop of the authors'
scripts); then the concurrency limit is raised. Measured twice: the teacher
alone, and the whole `respond` stage over prediction rows of the embedded
corpus (reading, batching, journaling and writing included). The target is at
least 0.9 x (limit / 0.2 s) requests per second.

Run: .venv/bin/python benchmarks/teacher_throughput.py
"""

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeio_jax.data import predictions, stages  # noqa: E402
from codeio_jax.data.ios import DEFAULT_CORPUS  # noqa: E402
from codeio_jax.data.pipeline import ChatTeacherSpec  # noqa: E402
from codeio_jax.teachers.openai_compatible import OpenAICompatibleTeacher  # noqa: E402
from tests.teachers.chat_server import ChatServer  # noqa: E402

DELAY_S = 0.2


def teacher_rate(server, concurrency, count):
    conversations = [[{"role": "user", "content": f"c{concurrency} q{i}"}] for i in range(count)]
    with OpenAICompatibleTeacher(server.base_url, "bench", api_key_env=None,
                                 max_concurrency=concurrency) as teacher:
        started = time.perf_counter()
        replies = teacher.reply(conversations)
        elapsed = time.perf_counter() - started
    assert all(r.ok for r in replies)
    return count / elapsed


def prompt_file(folder, count):
    """`count` prediction rows of the embedded corpus (pairs made up: the teacher only echoes)."""
    rows = []
    for line in DEFAULT_CORPUS.read_text().splitlines():
        record = {**json.loads(line), "ios": [{"input": {"k": i}, "output": i} for i in range(10)]}
        rows.extend(predictions.prompt_rows(record, per_task=3))
    picked = []
    for i in range(count):  # every conversation distinct, so none is answered from the cache
        row = rows[i % len(rows)]
        user = {**row["messages"][1], "content": f"{row['messages'][1]['content']}\n(#{i})"}
        picked.append({**row, "id": f"{row['id']}#{i}", "messages": [row["messages"][0], user]})
    path = folder / f"prompts_{count}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in picked))
    return path


def stage_rate(server, concurrency, count, folder):
    source = prompt_file(folder, count)
    work = Path(tempfile.mkdtemp(dir=folder))
    spec = ChatTeacherSpec(base_url=server.base_url, model=f"bench-{concurrency}", api_key_env=None,
                           max_concurrency=concurrency)
    with spec.build(None, work / "cache") as responder:
        started = time.perf_counter()
        summary = stages.respond_file(source, work / "responses.jsonl", work / "responses.errors.jsonl",
                                      responder, 1, repr(spec))
        elapsed = time.perf_counter() - started
    assert summary.ok == count and responder.usage.requests == count
    return count / elapsed


def main():
    folder = Path(tempfile.mkdtemp(prefix="bench-respond-"))
    with ChatServer(delay_s=DELAY_S) as server:
        base = teacher_rate(server, 1, 15)
        print(f"server delay {DELAY_S * 1000:.0f} ms per request; baseline: one request at a time, "
              f"{base:.2f} requests/s\n")
        print(f"{'':<16}{'concurrency':>11}{'requests/s':>12}{'ideal':>8}{'of ideal':>10}{'x sequential':>14}")
        for concurrency in (8, 16, 32):
            for what, rate in (("teacher", teacher_rate(server, concurrency, concurrency * 10)),
                               ("respond stage", stage_rate(server, concurrency, concurrency * 24, folder))):
                ideal = concurrency / DELAY_S
                print(f"{what:<16}{concurrency:>11}{rate:>12.1f}{ideal:>8.1f}{rate / ideal:>9.0%}"
                      f"{rate / base:>13.1f}x")


if __name__ == "__main__":
    main()
