"""A local HTTP server speaking the OpenAI chat-completions API, for tests and `bench/llm.py`.

The real `openai` client talks to it over loopback. Each test scripts its answers: a queue of
`Reply` values is served first, in order, then `responder` answers every other request (by
default a fixed text). A reply can be an HTTP error with headers (429 with `Retry-After`, 500),
a slow answer (to trip the client's timeout), any content, or any body at all. The server
counts and keeps every request it received, so a test can assert that a rerun sent nothing.

    with LlmServer() as server:
        server.script(Reply(status=429, headers={"Retry-After": "1"}), Reply("hello"))
        client = OpenAI(base_url=server.base_url, api_key="test")

`python -m tests.llm_server --delay 0.1` serves in its own process (for `bench/llm.py`): it
prints its base URL, answers every request after the delay, and stops when stdin closes.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted answer of the server."""

    content: str = "ok"
    """The assistant message's text (for a 200)."""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (longer than the client's timeout: a timeout)."""
    cost: float | None = None
    """`usage.cost` as OpenRouter reports it; None leaves it out."""
    message: str = ""
    """The error's message (for a status other than 200)."""
    body: str | None = None
    """Sent as is instead of a chat completion or an error: garbage, a proxy's HTML page, JSON
    of another shape."""


Responder = Callable[[dict[str, Any]], Reply]


def _approx_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def completion_body(request: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """A chat completion as OpenAI returns it, with token counts estimated from the text."""
    prompt = "".join(str(m.get("content", "")) for m in request.get("messages", []))
    usage: dict[str, Any] = {
        "prompt_tokens": _approx_tokens(prompt),
        "completion_tokens": _approx_tokens(reply.content),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if reply.cost is not None:
        usage["cost"] = reply.cost
    return {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "local"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.content},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    """A burst of new connections must not overflow the listen backlog (a dropped SYN costs
    the client a one-second retransmit)."""


class LlmServer:
    """The server, run in a background thread; a context manager that stops it on exit."""

    def __init__(self, responder: Responder | None = None, delay: float = 0.0) -> None:
        self.responder: Responder = responder or (lambda _request: Reply(delay=delay))
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        """The most requests the server was answering at once."""
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._httpd = _HttpServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def count(self) -> int:
        """How many requests arrived (answered or not)."""
        with self._lock:
            return len(self.requests)

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order, before the responder."""
        with self._lock:
            self._queue.extend(replies)

    def next_reply(self, request: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            scripted = self._queue.popleft() if self._queue else None
        return scripted if scripted is not None else self.responder(request)

    def answered(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def __enter__(self) -> LlmServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without this, delayed ACKs add 40 ms.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self) -> None:
                """`GET /stats`: how many requests arrived, for a server in another process."""
                data = json.dumps({"count": server.count}).encode()
                self._send(Reply(), data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                request = json.loads(self.rfile.read(length) or b"{}")
                reply = server.next_reply(request)
                try:
                    time.sleep(reply.delay)
                    if reply.body is not None:
                        body = reply.body
                    elif reply.status == 200:
                        body = completion_body(request, reply)
                    else:
                        message = reply.message or f"scripted {reply.status}"
                        body = {"error": {"message": message, "type": "test"}}
                finally:
                    # Before the answer leaves: a client that has it may send its next request
                    # at once, which must not find this one still counted in flight.
                    server.answered()
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self._send(reply, data)

            def _send(self, reply: Reply, data: bytes) -> None:
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): nothing to answer

            def log_message(self, *_: object) -> None:
                pass

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="A local OpenAI-compatible server.")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    with LlmServer(delay=args.delay) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
