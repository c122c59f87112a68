"""`alpo serve`: a model behind an OpenAI-compatible HTTP API, for sampling and judging.

It serves the transformers backend (CPU or GPU) at `/v1/models`, `/v1/completions` and
`/v1/chat/completions`, so any OpenAI client, and alpo's own `openai` backend, can use a local
checkpoint without vLLM. Beyond the OpenAI fields it reads `top_k`, `seed`, `return_token_ids`
(each choice then carries the sampled `token_ids`, as vLLM does) and `stop_lines` (stop once the
completion holds that many line breaks). A chat request whose `response_format` is the judge's
score schema is decoded under that schema. With `api_key_env`, requests must carry that
variable's value as their bearer token.
"""

from __future__ import annotations

import hmac
import json
import os
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from alpo.exceptions import AlpoError, ConfigError
from alpo.generation import SampleRequest, TransformersBackend

__all__ = ["make_server", "score_letters_of"]


def score_letters_of(response_format: Any) -> int:
    """n when `response_format` asks for the judge's score object over letters A.. (n keys)."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return 0
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    keys = list((schema.get("properties") or {}).keys())
    letters = [chr(65 + i) for i in range(len(keys))]
    return len(keys) if keys and keys == letters else 0


def make_server(
    backend: TransformersBackend,
    host: str = "127.0.0.1",
    port: int = 8000,
    served_name: str | None = None,
    api_key_env: str | None = None,
) -> ThreadingHTTPServer:
    """An HTTP server (not started: call `serve_forever`) answering for `backend`."""
    name = served_name or backend.name
    key = os.environ.get(api_key_env, "") if api_key_env else ""
    if api_key_env and not key:
        raise ConfigError(f"--api-key-env {api_key_env}: the variable is empty or not set")
    vocab = backend.vocab_size

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # quiet; errors are answered to the client

        def do_GET(self) -> None:  # noqa: N802
            if not self._authorized():
                return
            if self.path.rstrip("/") == "/v1/models":
                self._send(
                    200,
                    {
                        "object": "list",
                        "data": [{"id": name, "object": "model", "owned_by": "alpo"}],
                    },
                )
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802
            if not self._authorized():
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
                if length < 0:
                    raise ValueError("bad Content-Length")
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the request body must be a JSON object")
                if self.path == "/v1/completions":
                    self._send(200, complete(body))
                elif self.path == "/v1/chat/completions":
                    self._send(200, chat(body))
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
            except (ValueError, KeyError, TypeError, AlpoError) as e:
                self.close_connection = True
                self._send(400, {"error": {"message": str(e), "type": "invalid_request_error"}})
            except Exception as e:  # the server stays up; the client learns what went wrong
                self.close_connection = True
                self._send(
                    500, {"error": {"message": f"{type(e).__name__}: {e}", "type": "server_error"}}
                )

        def _authorized(self) -> bool:
            given = self.headers.get("Authorization", "")
            if key and not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
                self.close_connection = True  # the body was not read
                self._send(401, {"error": {"message": "missing or wrong API key"}})
                return False
            return True

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    def complete(body: dict[str, Any]) -> dict[str, Any]:
        prompt = body["prompt"]
        if isinstance(prompt, str):
            ids = list(backend.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        elif (
            isinstance(prompt, list)
            and prompt
            and all(isinstance(t, int) and 0 <= t < vocab for t in prompt)
        ):
            ids = prompt
        else:
            raise ValueError("prompt must be a string or a non-empty list of valid token ids")
        request = SampleRequest(
            prompt_ids=ids,
            n=int(body.get("n", 1)),
            temperature=float(body.get("temperature", 1.0)),
            top_k=int(body.get("top_k", 0) or 0),
            top_p=float(body.get("top_p", 1.0)),
            max_new_tokens=int(body.get("max_tokens", 16)),
            stop_lines=int(body.get("stop_lines", 0)),
            seed=int(body.get("seed", 0) or 0),
        )
        if request.n < 1 or request.max_new_tokens < 1:
            raise ValueError("n and max_tokens must be >= 1")
        (samples,) = backend.sample([request])
        choices = []
        for i, sampled in enumerate(samples):
            ended = bool(sampled) and sampled[-1] == backend.eos
            body_ids = sampled[:-1] if ended else sampled
            stopped = ended or (request.stop_lines > 0 and len(sampled) < request.max_new_tokens)
            choice: dict[str, Any] = {
                "index": i,
                "text": backend.decode(body_ids),
                "finish_reason": "stop" if stopped else "length",
            }
            if body.get("return_token_ids"):
                choice["token_ids"] = body_ids
            choices.append(choice)
        completion = sum(len(s) for s in samples)
        return _envelope("text_completion", choices, len(ids), completion)

    def chat(body: dict[str, Any]) -> dict[str, Any]:
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list")
        ids = backend.messages_ids(messages)
        temperature = float(body.get("temperature", 1.0))
        max_new = int(body.get("max_tokens", 256))
        seed = int(body.get("seed", 0) or 0)
        letters = score_letters_of(body.get("response_format"))
        text = backend.complete_ids(
            ids, temperature=temperature, max_new_tokens=max_new, score_letters=letters, seed=seed
        )
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }
        return _envelope("chat.completion", [choice], len(ids), 0)

    def _envelope(
        kind: str, choices: list[dict[str, Any]], prompt: int, completion: int
    ) -> dict[str, Any]:
        return {
            "id": f"alpo-{uuid.uuid4().hex[:12]}",
            "object": kind,
            "created": int(time.time()),
            "model": name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    return ThreadingHTTPServer((host, port), Handler)
