"""A small OpenAI-compatible HTTP server, so the real `openai` client can be tested over loopback.

Implements just what emailsync uses: POST /v1/chat/completions with a strict `json_schema`
response format (answered with JSON that satisfies the schema) and POST /v1/embeddings
(deterministic unit vectors of the requested `dimensions`, as floats or base64). Requests are
recorded, the API key is checked, and failures can be scripted with `fail_next`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"


@dataclass
class ScriptedFailure:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "scripted failure"


def deterministic_embedding(text: str, dimensions: int) -> list[float]:
    """A unit vector that depends only on `text` (same text, same vector)."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dimensions)
    return (vector / np.linalg.norm(vector)).tolist()


class OpenAICompatibleServer:
    """`with OpenAICompatibleServer(api_key="test-key") as server:` then use `server.base_url`."""

    def __init__(self, api_key: str = "test-key", host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_key = api_key
        self._lock = threading.Lock()
        self._failures: dict[str, list[ScriptedFailure]] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.calls: Counter[str] = Counter()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> OpenAICompatibleServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="openai-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OpenAICompatibleServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
            self._failures.clear()
            self.requests.clear()
            self.calls.clear()

    def fail_next(
        self, path: str, status: int, *, times: int = 1, headers: dict[str, str] | None = None
    ) -> None:
        """The next `times` requests to `path` answer `status` (with `headers`, e.g. Retry-After)."""
        with self._lock:
            queue = self._failures.setdefault(path, [])
            queue.extend(ScriptedFailure(status, dict(headers or {})) for _ in range(times))

    def requests_to(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [body for request_path, body in self.requests if request_path == path]

    # --- request handling -------------------------------------------------------------------------

    def _handle(self, path: str, authorization: str | None, body: dict[str, Any]) -> tuple[int, dict, dict]:
        with self._lock:
            self.calls[path] += 1
            self.requests.append((path, body))
            queue = self._failures.get(path)
            failure = queue.pop(0) if queue else None
        if authorization != f"Bearer {self.api_key}":
            return 401, {}, _error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if failure is not None:
            kind = "rate_limit_exceeded" if failure.status == 429 else "server_error"
            return failure.status, failure.headers, _error(failure.message, kind, kind)
        if path == CHAT_PATH:
            return self._chat(body)
        if path == EMBEDDINGS_PATH:
            return self._embeddings(body)
        return 404, {}, _error(f"Unknown path {path}", "invalid_request_error", "unknown_url")

    def _chat(self, body: dict[str, Any]) -> tuple[int, dict, dict]:
        response_format = body.get("response_format") or {}
        schema_spec = response_format.get("json_schema") or {}
        schema = schema_spec.get("schema") or {}
        if response_format.get("type") != "json_schema" or schema_spec.get("strict") is not True:
            return 400, {}, _error("Expected a strict json_schema response_format.", "invalid_request_error")
        try:
            allowed_tags: list[str] = schema["properties"]["tags"]["items"]["enum"]
        except (KeyError, TypeError):
            return 400, {}, _error("Schema must constrain tags with an enum.", "invalid_request_error")
        user_text = next((m["content"] for m in body.get("messages", []) if m.get("role") == "user"), "")
        words = set(re.findall(r"[a-z-]+", user_text.lower()))
        tags = [tag for tag in allowed_tags if tag in words or tag.rstrip("s") in words][:3] or allowed_tags[
            :1
        ]
        _, _, content = user_text.partition("\n\n")
        summary = " ".join(content.split())[:200] or "An email."
        answer = json.dumps({"summary": summary, "tags": tags})
        return (
            200,
            {},
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "gpt-4o-mini"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer, "refusal": None},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {"prompt_tokens": len(user_text) // 4, "completion_tokens": 40, "total_tokens": 0},
            },
        )

    def _embeddings(self, body: dict[str, Any]) -> tuple[int, dict, dict]:
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        if not inputs or any(not isinstance(text, str) or not text for text in inputs):
            return 400, {}, _error("input must be non-empty strings.", "invalid_request_error")
        dimensions = int(body.get("dimensions") or 1536)
        data = []
        for index, text in enumerate(inputs):
            vector = deterministic_embedding(text, dimensions)
            if body.get("encoding_format") == "base64":
                encoded: Any = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode("ascii")
            else:
                encoded = vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(text) // 4 for text in inputs)
        return (
            200,
            {},
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "text-embedding-3-small"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._send(400, {}, _error("Body is not JSON.", "invalid_request_error"))
                    return
                status, headers, payload = server._handle(
                    self.path.split("?", 1)[0], self.headers.get("Authorization"), body
                )
                self._send(status, headers, payload)

            def _send(self, status: int, headers: dict[str, str], payload: dict) -> None:
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # quiet: tests read `requests`
                pass

        return Handler


def _error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
