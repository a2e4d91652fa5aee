"""An OpenAI-compatible chat-completions server over the sampler (stdlib only).

    server = make_server(ChatModel.from_folder(folder), port=8000)
    server.serve_forever()     # `codeio-jax serve --model FOLDER` does this

    POST /v1/chat/completions   messages, max_tokens (or max_completion_tokens),
                                temperature, top_p, top_k, stop, seed, n=1
    GET  /v1/models

Requests arrive on many threads (ThreadingHTTPServer) and wait on a queue; one
worker thread takes up to `max_batch` of them at a time and runs them as one
generate call, so concurrent clients share the batch instead of queueing one
by one. Only the worker touches JAX. Bad requests get a 400 (an unknown model a
404) with the OpenAI error body {"error": {"message", "type", "param", "code"}}.
Defaults follow the OpenAI API: temperature 1, top_p 1, no seed (a random one).
"""

from __future__ import annotations

import concurrent.futures
import json
import queue
import secrets
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from codeio_jax.sampling.chat import ChatModel, ChatRequest
from codeio_jax.sampling.sampler import SamplingParams


class RequestError(Exception):
    """A request refused with `status` and an OpenAI error body."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def parse_request(body: Any, chat: ChatModel, name: str, default_max_tokens: int) -> ChatRequest:
    """The generation a request body asks for, or a RequestError naming the field."""
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    if body.get("model") not in (None, name):
        raise RequestError(f"the model {body['model']!r} does not exist; this server has {name!r}", "model",
                           "model_not_found", 404)
    if "messages" not in body:
        raise RequestError("messages is required", "messages")
    for field, allowed in (("n", (None, 1)), ("stream", (None, False)), ("logprobs", (None, False)),
                           ("tools", (None, [])), ("frequency_penalty", (None, 0)), ("presence_penalty", (None, 0))):
        if body.get(field) not in allowed:
            raise RequestError(f"{field}={body[field]!r} is not supported by this server", field)
    try:
        prompt = chat.encode(body["messages"])
    except ValueError as exc:
        raise RequestError(f"messages: {exc}", "messages") from None
    room = chat.max_length - len(prompt)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = min(default_max_tokens, room)
    elif not _is_int(max_tokens) or max_tokens < 1:
        raise RequestError(f"max_tokens must be a positive integer, got {max_tokens!r}", "max_tokens")
    if room < 1 or max_tokens > room:
        raise RequestError(f"this model's maximum context length is {chat.max_length} tokens; the messages "
                           f"take {len(prompt)} and max_tokens asks for {max_tokens} more", "messages",
                           "context_length_exceeded")
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0:
        raise RequestError("top_p must be greater than 0", "top_p")
    top_k = body.get("top_k", 0)
    if not _is_int(top_k) or top_k < 0:
        raise RequestError(f"top_k must be a non-negative integer, got {top_k!r}", "top_k")
    seed = body.get("seed")
    if seed is None:
        seed = secrets.randbits(32)
    elif not _is_int(seed):
        raise RequestError(f"seed must be an integer, got {seed!r}", "seed")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise RequestError("stop must be a non-empty string or a list of at most 4 of them", "stop")
    return ChatRequest(prompt, SamplingParams(max_tokens, temperature, top_k, top_p, seed=seed), tuple(stops))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(body: dict, field: str, default: float, low: float, high: float) -> float:
    value = body.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestError(f"{field} must be a number in [{low:g}, {high:g}], got {value!r}", field)
    return float(value)


class Batcher:
    """A queue of requests and the one thread that runs them, up to `max_batch`
    per generate call. After the first request of a batch it waits `wait_s` for
    others to join (requests that queue during a generate call join the next)."""

    def __init__(self, chat: ChatModel, max_batch: int = 8, wait_s: float = 0.005):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.chat, self.max_batch, self.wait_s = chat, max_batch, wait_s
        self.generate_calls = 0
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="batcher", daemon=True)
        self._thread.start()

    def submit(self, request: ChatRequest) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((request, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch, closing = [item], False
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    closing = True
                    break
                batch.append(item)
            self._run(batch)
            if closing:
                return

    def _run(self, batch: list) -> None:
        self.generate_calls += 1
        try:
            results = self.chat.complete([request for request, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every waiting client must hear of it
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results):
            future.set_result(result)


class OpenAIServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], chat: ChatModel, name: str, max_batch: int = 8,
                 batch_wait_s: float = 0.005, default_max_tokens: int = 1024):
        super().__init__(address, _Handler)
        self.chat, self.name, self.default_max_tokens = chat, name, default_max_tokens
        self.batcher = Batcher(chat, max_batch, batch_wait_s)
        self.created = int(time.time())

    def server_close(self) -> None:
        super().server_close()
        self.batcher.close()


def make_server(chat: ChatModel, host: str = "127.0.0.1", port: int = 8000, name: str = "local",
                max_batch: int = 8, batch_wait_s: float = 0.005, default_max_tokens: int = 1024) -> OpenAIServer:
    """The server, bound (port 0: any free port, see server.server_address) but not yet serving."""
    return OpenAIServer((host, port), chat, name, max_batch, batch_wait_s, default_max_tokens)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the teacher reuses its connections
    server: OpenAIServer

    def log_message(self, *args) -> None:
        pass  # library code never prints; the CLI says where it serves

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as two writes: without this, Nagle's algorithm
        # holds the body until the client's delayed ACK (40 ms a request).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            return self._send(404, RequestError(f"no route GET {self.path}", status=404).body())
        self._send(200, {"object": "list", "data": [{"id": self.server.name, "object": "model",
                                                     "created": self.server.created, "owned_by": "codeio-jax"}]})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._send(404, RequestError(f"no route POST {self.path}", status=404).body())
        try:
            try:
                body = json.loads(data)
            except ValueError as exc:
                raise RequestError(f"the body is not valid JSON: {exc}") from None
            request = parse_request(body, self.server.chat, self.server.name, self.server.default_max_tokens)
            result = self.server.batcher.submit(request).result()
        except RequestError as exc:
            return self._send(exc.status, exc.body())
        except Exception as exc:  # noqa: BLE001 - a failed generation is the server's fault, said as such
            return self._send(500, RequestError(f"generation failed: {type(exc).__name__}: {exc}",
                                                status=500).body())
        self._send(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": self.server.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                         "finish_reason": result.finish_reason, "logprobs": None}],
            "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                      "total_tokens": result.prompt_tokens + result.completion_tokens}})

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
