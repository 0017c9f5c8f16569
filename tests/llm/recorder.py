"""A loopback HTTP recorder standing in for the providers' APIs (127.0.0.1 only).

The real `openai` and `anthropic` SDKs are pointed at it (`base_url`), so tests see the
exact requests the SDKs would send; it answers with a minimal valid completion, or with
a scripted status (429, 503, ...) to drive fallbacks through the SDKs' own exceptions.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

OPENAI_REPLY: Final = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt-4o",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
}
ANTHROPIC_REPLY: Final = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4",
    "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 2},
}


@dataclass(frozen=True)
class Recorded:
    """One request as it reached the recorder."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class Recorder:
    """Records every request; answers `statuses` in order first (then 200)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.statuses: deque[int] = deque()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                recorder.requests.append(
                    Recorded(
                        "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body
                    )
                )
                status = recorder.statuses.popleft() if recorder.statuses else 200
                if status != 200:
                    reply: dict[str, Any] = {
                        "error": {"type": "error", "message": f"scripted {status}"}
                    }
                else:
                    reply = ANTHROPIC_REPLY if self.path.endswith("/messages") else OPENAI_REPLY
                payload = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the tests read `requests`, not stderr."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
