"""A scripted OpenAI-compatible chat-completions server on loopback, for the
teacher's tests and benchmark. Each request's last user message may carry a
behaviour: `[[status:429:2]]` answers 429 to its first two attempts, `[[garbage]]`
answers a body that is not JSON, `[[hang]]` never answers in time, `[[status:400]]`
always refuses. Otherwise the reply is `answer(messages)` when the server was
given that function, else an echo of the message; every reply waits `delay_s` first."""

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    def __init__(self, delay_s: float = 0.0, hang_s: float = 5.0, answer=None):
        self.delay_s = delay_s
        self.answer = answer
        self.hang_s = hang_s
        self.hits = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.attempts: dict[str, int] = {}
        self.authorizations: list = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                # As real servers do: no Nagle delay between the headers and the body.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length))
                with server.lock:
                    server.authorizations.append(self.headers.get("Authorization"))
                    server.hits += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self.answer(request)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def answer(self, request):
                text = request["messages"][-1]["content"]
                with server.lock:
                    server.attempts[text] = server.attempts.get(text, 0) + 1
                    attempt = server.attempts[text]
                time.sleep(server.delay_s)
                status = re.search(r"\[\[status:(\d+)(?::(\d+))?\]\]", text)
                if status and (status.group(2) is None or attempt <= int(status.group(2))):
                    return self.send(int(status.group(1)), b'{"error": {"message": "scripted"}}')
                if "[[hang]]" in text:
                    time.sleep(server.hang_s)
                if "[[garbage]]" in text:
                    return self.send(200, b"<html>not json</html>")
                content = server.answer(request["messages"]) if server.answer else f"echo: {text}"
                body = {"choices": [{"message": {"role": "assistant", "content": content},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": len(text.split()), "completion_tokens": 2}}
                self.send(200, json.dumps(body).encode())

            def send(self, status, data):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
