"""A teacher behind any OpenAI-compatible chat-completions server.

DeepSeek, OpenAI, vLLM and SGLang all speak `POST {base_url}/chat/completions`.
Requests run on a bounded pool of threads, one keep-alive connection each.
429s, 5xx answers, timeouts, dropped connections and unreadable bodies are
retried with exponential backoff and full jitter (honouring Retry-After);
other 4xx answers are not. Replies are cached on disk under a hash of
(model, messages, sampling parameters), so a rerun never pays twice.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import json
import os
import random
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Sequence

from codeio_jax.records import open_atomic
from codeio_jax.teachers.base import Message, Reply, Usage

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})


class TeacherError(ValueError):
    """A teacher that cannot work as configured (not a failed request)."""


class ResponseCache:
    """One JSON file per reply under `root`, written atomically. `root` may be
    on any filesystem Beam knows (`gs://...`), so the workers of a Beam
    pipeline share one cache: there an object appears whole when written."""

    def __init__(self, root: str | Path):
        self.root = str(root).rstrip("/")
        self._remote = "://" in self.root
        if not self._remote:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(model: str, messages: Sequence[Message], params: dict) -> str:
        blob = json.dumps({"model": model, "messages": list(messages), "params": params},
                          sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()

    def _path(self, key: str) -> str:
        return f"{self.root}/{key[:2]}/{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            if self._remote:
                from apache_beam.io.filesystems import FileSystems

                with FileSystems.open(self._path(key)) as f:
                    return json.loads(f.read().decode("utf-8"))
            return json.loads(Path(self._path(key)).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # Beam's "not found" is an IOError too
            return None  # a torn or missing entry is a miss, never an error

    def put(self, key: str, entry: dict) -> None:
        text = json.dumps(entry, ensure_ascii=False)
        if self._remote:
            from apache_beam.io.filesystems import FileSystems

            with FileSystems.create(self._path(key)) as f:
                f.write(text.encode("utf-8"))
            return
        Path(self._path(key)).parent.mkdir(exist_ok=True)
        with open_atomic(self._path(key)) as f:
            f.write(text)


class OpenAICompatibleTeacher:
    """base_url: e.g. https://api.deepseek.com/v1 or http://127.0.0.1:8000/v1.
    api_key_env: the environment variable holding the key (none needed when unset
      and the server asks for none).
    params: sampling parameters sent with every request (temperature, max_tokens,
      top_p, seed, ...); they are part of the cache key.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY",
                 max_concurrency: int = 8, timeout_s: float = 120.0, max_retries: int = 6,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 30.0,
                 cache_dir: str | Path | None = None, params: dict[str, Any] | None = None):
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise TeacherError(f"base_url must be an http(s) URL, got {base_url!r}")
        if max_concurrency < 1:
            raise TeacherError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.model = model
        self.params = dict(params or {})
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.cache = ResponseCache(cache_dir) if cache_dir else None
        self.usage = Usage()
        self._scheme, self._host, self._port = parsed.scheme, parsed.hostname, parsed.port
        self._path = parsed.path.rstrip("/") + "/chat/completions"
        key = os.environ.get(api_key_env) if api_key_env else None
        self._headers = {"Content-Type": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._local = threading.local()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_concurrency, thread_name_prefix="teacher")

    def reply(self, conversations: Sequence[Sequence[Message]]) -> list[Reply]:
        return list(self._pool.map(self._one, conversations))

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "OpenAICompatibleTeacher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _one(self, messages: Sequence[Message]) -> Reply:
        key = ResponseCache.key(self.model, messages, self.params) if self.cache else None
        if self.cache:
            hit = self.cache.get(key)
            if hit is not None:
                self.usage.add(cached=1)
                return Reply(text=hit["text"], finish_reason=hit.get("finish_reason"), cached=True)
        body = json.dumps({"model": self.model, "messages": list(messages), **self.params}).encode()
        last_error = "no attempt made"
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.usage.add(retries=1)
            outcome, retry_after = self._attempt(body)
            if isinstance(outcome, Reply):
                self.usage.add(requests=1, prompt_tokens=outcome.prompt_tokens,
                               completion_tokens=outcome.completion_tokens)
                if self.cache:
                    self.cache.put(key, {"text": outcome.text, "finish_reason": outcome.finish_reason})
                return outcome
            last_error, retryable = outcome
            if not retryable:
                break
            if attempt < self.max_retries:
                time.sleep(self._backoff(attempt, retry_after))
        self.usage.add(failed=1)
        return Reply(error=last_error)

    def _attempt(self, body: bytes):
        """A Reply, or ((error, retryable), retry_after)."""
        try:
            response, data = self._post(body)
        except (socket.timeout, TimeoutError):
            self._drop_connection()
            return (f"no answer within {self.timeout_s} s", True), None
        except (OSError, http.client.HTTPException) as exc:
            self._drop_connection()
            return (f"connection failed: {type(exc).__name__}: {exc}", True), None
        if response.status != 200:
            retry_after = response.getheader("Retry-After")
            detail = data[:300].decode("utf-8", "replace")
            return (f"HTTP {response.status}: {detail}", response.status in RETRYABLE_STATUS), retry_after
        try:
            payload = json.loads(data)
            choice = payload["choices"][0]
            text = choice["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("message content is not a string")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return (f"unreadable response ({type(exc).__name__}: {exc}): "
                    f"{data[:200].decode('utf-8', 'replace')}", True), None
        usage = payload.get("usage") or {}
        return Reply(text=text, finish_reason=choice.get("finish_reason"),
                     prompt_tokens=int(usage.get("prompt_tokens") or 0),
                     completion_tokens=int(usage.get("completion_tokens") or 0)), None

    def _post(self, body: bytes):
        reused = getattr(self._local, "conn", None) is not None
        try:
            conn = self._connection()
            conn.request("POST", self._path, body=body, headers=self._headers)
            response = conn.getresponse()
            return response, response.read()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            if not reused:
                raise
            # The server closed a kept-alive connection between requests: that
            # is not a failure of this request, so try once on a fresh one.
            self._drop_connection()
            conn = self._connection()
            conn.request("POST", self._path, body=body, headers=self._headers)
            response = conn.getresponse()
            return response, response.read()

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(self.backoff_max_s, max(0.0, float(retry_after)))
            except ValueError:
                pass
        # Full jitter: spreads out the retries of many threads hit at once.
        return random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2 ** attempt))

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            kind = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            conn = kind(self._host, self._port, timeout=self.timeout_s)
            conn.connect()
            # Small request, small reply: Nagle's algorithm would only add delay.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
