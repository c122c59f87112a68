"""Text generation backends behind one interface, for sampling candidates and for judging.

A backend does two things:

- `sample(requests)`: for each request (prompt token ids, n, sampling settings), n continuations
  as the token ids the model sampled, so nothing is re-tokenized later. A request may ask to
  stop once the continuation holds `stop_lines` line breaks (the end of a segment's lines),
  besides the end-of-sequence token, which is kept at the end of the ids when sampled.
- `chat(prompts, ...)`: one reply text per user prompt, rendered with the model's chat template
  (Qwen3's thinking off); with `score_letters=n`, the reply is held to the judge's JSON shape
  (`{"A": 0..100, ...}`), where the backend can enforce it.

`TransformersBackend` runs a model in this process (CPU or GPU) with batched `generate`;
`VLLMBackend` runs vLLM in this process (GPU); `OpenAIBackend` talks to any OpenAI-compatible
server, such as `vllm serve` or `alpo serve`.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from alpo import models
from alpo.exceptions import ConfigError, InputError

__all__ = [
    "Backend",
    "OpenAIBackend",
    "SampleRequest",
    "TransformersBackend",
    "VLLMBackend",
    "finish_piece",
    "make_backend",
    "score_pattern",
]


@dataclass
class SampleRequest:
    """n continuations of `prompt_ids`."""

    prompt_ids: list[int]
    n: int = 1
    temperature: float = 1.0
    top_k: int = 40
    top_p: float = 0.9
    max_new_tokens: int = 256
    #: stop once the continuation holds this many line breaks (0: only at end of sequence)
    stop_lines: int = 0
    seed: int = 0


class Backend(Protocol):
    """What the sampling stage and the judge need from a model server."""

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[list[int]]]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def chat(
        self,
        prompts: Sequence[str],
        *,
        temperature: float = 0.3,
        max_new_tokens: int = 256,
        score_letters: int = 0,
        seed: int = 0,
    ) -> list[str]: ...


def score_pattern(n: int) -> str:
    """The judge reply's canonical JSON shape for n candidates, as a regular expression."""
    number = "(?:100|[1-9]?[0-9])"
    body = ", ".join(f'"{chr(65 + i)}": {number}' for i in range(n))
    return r"\{" + body + r"\}"


class TransformersBackend:
    """A causal LM in this process: batched sampling with transformers' `generate`."""

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        device: str | None = None,
        trust_remote_code: bool = False,
        max_batch: int = 32,
    ) -> None:
        import torch

        self.name = model
        self.tokenizer = models.load_tokenizer(model, trust_remote_code)
        self.model = models.load_model(
            model, dtype=dtype, device=device, trust_remote_code=trust_remote_code
        )
        self.model.eval()
        self.device = self.model.device
        self.max_batch = max_batch
        self.eos = self.tokenizer.eos_token_id
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # Line breaks per token, to stop a sequence at the end of its segment's lines.
        # (The model's output may be wider than the tokenizer: padded vocabularies.)
        size = max(len(self.tokenizer), int(self.model.get_output_embeddings().weight.shape[0]))
        known = len(self.tokenizer)
        self.vocab_size = size
        self._newlines = torch.tensor(
            [self.tokenizer.decode([i]).count("\n") if i < known else 0 for i in range(size)],
            dtype=torch.long,
            device=self.device,
        )
        self._lock = threading.Lock()  # one generate at a time (the HTTP server has threads)
        # transformers renamed the KV-cache argument (and output) `past_key_values` -> `cache`.
        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids)))

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[list[int]]]:
        """n continuations per request. Requests with the same settings and prompt length are
        generated together; each row stops at end of sequence or at its line-break count."""
        rows = [(r, i) for r, req in enumerate(requests) for i in range(req.n)]
        out: list[list[list[int]]] = [[] for _ in requests]
        groups: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
        for r, i in rows:
            q = requests[r]
            # Rows of one generate call share their prompt length: with padding, attention
            # needs an explicit mask and falls back to a kernel that costs batch x length^2
            # memory, slower on CPU than generating the lengths one after another.
            key = (len(q.prompt_ids), q.temperature, q.top_k, q.top_p, q.max_new_tokens, q.seed)
            groups.setdefault(key, []).append((r, i))
        for members in groups.values():
            for start in range(0, len(members), self.max_batch):
                chunk = members[start : start + self.max_batch]
                reqs = [requests[r] for r, _ in chunk]
                for (r, _), ids in zip(chunk, self._generate(reqs), strict=True):
                    out[r].append(ids)
        return out

    def _generate(self, reqs: Sequence[SampleRequest]) -> list[list[int]]:
        import torch

        first = reqs[0]
        ids, mask = self._left_pad([q.prompt_ids for q in reqs])
        need = torch.tensor([q.stop_lines for q in reqs], device=self.device)
        width = ids.shape[1]
        newlines = self._newlines

        def done(input_ids: Any, scores: Any, **_: Any) -> Any:
            if not bool((need > 0).any()):
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=self.device)
            seen = newlines[input_ids[:, width:]].sum(dim=1)
            return (need > 0) & (seen >= need)

        with self._lock, torch.no_grad():
            torch.manual_seed(first.seed)
            gen = self.model.generate(  # type: ignore[operator]
                input_ids=ids,
                attention_mask=mask,
                # Every sampling setting explicit, so the model's generation_config (its own
                # top-k, top-p, repetition penalty) never changes what was asked for.
                do_sample=first.temperature > 0,
                temperature=first.temperature if first.temperature > 0 else 1.0,
                top_k=first.top_k if first.temperature > 0 else 0,
                top_p=first.top_p if first.temperature > 0 else 1.0,
                repetition_penalty=1.0,
                max_new_tokens=first.max_new_tokens,
                stopping_criteria=[done],
                pad_token_id=self.pad,
                eos_token_id=self.eos,
            )
        results = []
        for row, q in enumerate(reqs):
            results.append(self._trim(gen[row, width:].tolist(), q.stop_lines))
        return results

    def _trim(self, new: list[int], stop_lines: int) -> list[int]:
        """The continuation up to its end: the end-of-sequence token (kept) or the token that
        completes the wanted line breaks; what generate appended after it (padding) is cut."""
        seen = 0
        for j, tok in enumerate(new):
            if tok == self.eos:
                return new[: j + 1]
            seen += int(self._newlines[tok])
            if stop_lines and seen >= stop_lines:
                return new[: j + 1]
        return new

    def _left_pad(self, prompts: Sequence[list[int]]) -> tuple[Any, Any]:
        import torch

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[row, width - len(p) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def messages_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        from alpo.chat import conversation_ids

        return conversation_ids(self.tokenizer, messages)

    def complete_ids(
        self,
        ids: list[int],
        *,
        temperature: float,
        max_new_tokens: int,
        score_letters: int = 0,
        seed: int = 0,
    ) -> str:
        """One reply to prompt `ids`; with `score_letters`, decoded under the score JSON."""
        if score_letters:
            return self._constrained(
                ids, score_pattern(score_letters), temperature, max_new_tokens, seed
            )
        request = SampleRequest(ids, 1, temperature, 0, 1.0, max_new_tokens, 0, seed)
        (out,) = self.sample([request])
        return self.decode([t for t in out[0] if t != self.eos])

    def chat(
        self,
        prompts: Sequence[str],
        *,
        temperature: float = 0.3,
        max_new_tokens: int = 256,
        score_letters: int = 0,
        seed: int = 0,
    ) -> list[str]:
        """One reply per user prompt; with `score_letters`, held to the score JSON."""
        conversations = [self.messages_ids([{"role": "user", "content": p}]) for p in prompts]
        if score_letters:
            return [
                self.complete_ids(
                    ids,
                    temperature=temperature,
                    max_new_tokens=max_new_tokens,
                    score_letters=score_letters,
                    seed=seed + i,
                )
                for i, ids in enumerate(conversations)
            ]
        reqs = [
            SampleRequest(ids, 1, temperature, 0, 1.0, max_new_tokens, 0, seed)
            for ids in conversations
        ]
        return [self.decode([t for t in out[0] if t != self.eos]) for out in self.sample(reqs)]

    def _constrained(
        self, prompt_ids: list[int], pattern: str, temperature: float, max_new: int, seed: int
    ) -> str:
        """Sample token by token, allowing only tokens that keep the text a prefix of
        `pattern`; ends when the text matches it whole."""
        import regex
        import torch

        vocab = self._json_vocab()
        text = ""
        ids = torch.tensor([prompt_ids], device=self.device)
        past = None
        generator = torch.Generator(device="cpu").manual_seed(seed)
        with self._lock, torch.no_grad():
            for _ in range(max_new):
                out = self.model(input_ids=ids, use_cache=True, **{self._cache_arg: past})
                past = getattr(out, self._cache_arg)
                logits = out.logits[0, -1].float().cpu()
                allowed = [t for t, s in vocab if regex.fullmatch(pattern, text + s, partial=True)]
                if not allowed:
                    break
                scores = logits[allowed]
                if temperature > 0:
                    probs = torch.softmax(scores / temperature, dim=0)
                    pick = allowed[int(torch.multinomial(probs, 1, generator=generator))]
                else:
                    pick = allowed[int(scores.argmax())]
                text += str(self.tokenizer.decode([pick]))
                if regex.fullmatch(pattern, text):
                    break
                ids = torch.tensor([[pick]], device=self.device)
        return text

    def _json_vocab(self) -> list[tuple[int, str]]:
        """Tokens made only of characters a score reply can contain."""
        if not hasattr(self, "_json_tokens"):
            chars = set('{}":, 0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ')
            self._json_tokens = [
                (i, s)
                for i in range(len(self.tokenizer))
                if (s := str(self.tokenizer.decode([i]))) and set(s) <= chars
            ]
        return self._json_tokens


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    if temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
        raise ConfigError("sampling needs temperature >= 0, top_k >= 0 and 0 < top_p <= 1")


class OpenAIBackend:
    """Any OpenAI-compatible server: vLLM serve, SGLang, llama.cpp server, `alpo serve`, or a
    hosted API (judging only: sampling needs the server to return token ids).

    Sampling posts token-id prompts to `/v1/completions` with `return_token_ids` (vLLM's and
    `alpo serve`'s field) and `stop_lines` (`alpo serve`'s; pieces from servers that ignore it
    are cut here). Judging posts to `/v1/chat/completions` with a JSON-schema
    `response_format`. Requests run `concurrency` at a time, each retried with exponential backoff
    on connection errors, timeouts, 429 and 5xx answers. The key comes from the environment
    variable named by `api_key_env` and is never logged. `thinking_off` sends
    `chat_template_kwargs` that switch Qwen3's thinking off (vLLM and SGLang read it).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        tokenizer: Any = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 600.0,
        retries: int = 5,
        backoff: float = 1.0,
        extra_body: dict[str, Any] | None = None,
        thinking_off: bool = False,
    ) -> None:
        import os

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.tokenizer = tokenizer
        self._key = os.environ.get(api_key_env, "")
        self.concurrency = max(1, concurrency)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.extra_body = extra_body or {}
        self.thinking_off = thinking_off
        self.calls = 0

    def decode(self, ids: Sequence[int]) -> str:
        if self.tokenizer is None:
            raise ConfigError("the openai backend needs the model's tokenizer to decode ids")
        return str(self.tokenizer.decode(list(ids)))

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[list[int]]]:
        bodies = [
            {
                "model": self.model,
                "prompt": q.prompt_ids,
                "n": q.n,
                "temperature": q.temperature,
                "top_p": q.top_p,
                "top_k": q.top_k,
                "max_tokens": q.max_new_tokens,
                "seed": q.seed,
                "return_token_ids": True,
                "skip_special_tokens": False,
                **({"stop_lines": q.stop_lines} if q.stop_lines else {}),
                **_line_stop(q.stop_lines),
                **self.extra_body,
            }
            for q in requests
        ]
        replies = self._post_all("/v1/completions", bodies)
        out = []
        for reply, q in zip(replies, requests, strict=True):
            choices = sorted(reply.get("choices", []), key=lambda c: c.get("index", 0))
            if any("token_ids" not in c for c in choices):
                raise InputError(
                    f"{self.base_url}: the server returned no token ids (it needs "
                    "`return_token_ids`, as vLLM serve and alpo serve have)"
                )
            out.append([self._ended(list(c["token_ids"]), c, q) for c in choices])
        return out

    def _ended(self, ids: list[int], choice: dict[str, Any], q: SampleRequest) -> list[int]:
        eos = getattr(self.tokenizer, "eos_token_id", None)
        return finish_piece(ids, choice.get("finish_reason"), q.stop_lines, eos, self.decode)

    def chat(
        self,
        prompts: Sequence[str],
        *,
        temperature: float = 0.3,
        max_new_tokens: int = 256,
        score_letters: int = 0,
        seed: int = 0,
    ) -> list[str]:
        from alpo.judging import score_schema

        bodies = []
        for i, prompt in enumerate(prompts):
            body: dict[str, Any] = {
                "model": self.model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": temperature,
                "max_tokens": max_new_tokens,
                "seed": seed + i,
                **self.extra_body,
            }
            if self.thinking_off:
                body["chat_template_kwargs"] = {"enable_thinking": False}
            if score_letters:
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "scores", "schema": score_schema(score_letters)},
                }
            bodies.append(body)
        replies = self._post_all("/v1/chat/completions", bodies)
        return [str(r["choices"][0]["message"].get("content") or "") for r in replies]

    def _post_all(self, path: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(self.concurrency)
        try:
            futures = [pool.submit(self._post, path, b) for b in bodies]
            return [f.result() for f in futures]
        finally:  # on the first failure, the requests not yet started are dropped
            pool.shutdown(wait=True, cancel_futures=True)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import http.client
        import json
        import time
        import urllib.error
        import urllib.request

        url = self.base_url + path
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self.calls += 1
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                    return dict(json.loads(resp.read()))
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
                with e:
                    detail = e.read()[:300].decode("utf-8", "replace")
                if e.code != 429 and e.code < 500:
                    first = " ".join(detail.split())
                    raise InputError(f"{url}: HTTP {e.code}: {first}") from None
            except (
                urllib.error.URLError,
                TimeoutError,
                ConnectionError,
                http.client.HTTPException,
            ) as e:
                last = str(getattr(e, "reason", e))
            except ValueError:
                last = "the answer is not JSON"
        raise InputError(f"{url}: no answer after {self.retries + 1} tries ({last})")


def _line_stop(stop_lines: int) -> dict[str, Any]:
    """Stop settings that end a one-line segment at its line break on engines that cannot count
    line breaks (vLLM); longer segments are cut afterwards by `finish_piece`."""
    return {"stop": ["\n"], "include_stop_str_in_output": True} if stop_lines == 1 else {}


def finish_piece(
    ids: list[int],
    finish_reason: str | None,
    stop_lines: int,
    eos: int | None,
    decode: Callable[[Sequence[int]], str],
) -> list[int]:
    """A server's completion as the transformers backend gives it: cut after the token that
    completes `stop_lines` line breaks (servers cannot stop there themselves), and ended with
    the end-of-sequence token when the model stopped by itself (servers often leave it out)."""
    if stop_lines:
        seen = 0
        for j, tok in enumerate(ids):
            seen += decode([tok]).count("\n")
            if seen >= stop_lines:
                return ids[: j + 1]
    if eos is not None and finish_reason == "stop" and ids[-1:] != [eos]:
        ids.append(int(eos))  # stopped before its line breaks: the model ended the answer
    return ids


class VLLMBackend:
    """vLLM in this process (GPU): `n` samples per request with prefix caching on, tensor
    parallel over `tensor_parallel_size` GPUs, data-parallel engines with `data_parallel_size`,
    and JSON-schema structured outputs for the judge. Prompts go in as token ids and samples
    come back as the engine's token ids. Needs the `vllm` extra (its own environment: it pins
    torch and transformers)."""

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        seed: int = 0,
    ) -> None:
        try:
            from vllm import LLM
        except ImportError:
            raise ConfigError(
                "backend vllm needs the vllm package (pip install 'alpo[vllm]', on a GPU machine)"
            ) from None
        source = models.resolve(model)
        kwargs: dict[str, Any] = {}
        if data_parallel_size > 1:
            kwargs["data_parallel_size"] = data_parallel_size
        self.name = model
        self.llm = LLM(
            model=source.location,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len or None,
            enable_prefix_caching=True,
            seed=seed,
            **kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.eos = self.tokenizer.eos_token_id

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids)))

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[list[int]]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(q.prompt_ids)) for q in requests]
        params = [
            SamplingParams(
                n=q.n,
                temperature=q.temperature,
                top_k=q.top_k if q.top_k > 0 else -1,
                top_p=q.top_p,
                max_tokens=q.max_new_tokens,
                seed=q.seed,
                skip_special_tokens=False,
                **_line_stop(q.stop_lines),
            )
            for q in requests
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [
            [
                finish_piece(
                    list(o.token_ids), o.finish_reason, q.stop_lines, self.eos, self.decode
                )
                for o in out.outputs
            ]
            for out, q in zip(outputs, requests, strict=True)
        ]

    def chat(
        self,
        prompts: Sequence[str],
        *,
        temperature: float = 0.3,
        max_new_tokens: int = 256,
        score_letters: int = 0,
        seed: int = 0,
    ) -> list[str]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import StructuredOutputsParams

        from alpo.chat import conversation_ids
        from alpo.judging import score_schema

        structured = (
            StructuredOutputsParams(json=score_schema(score_letters)) if score_letters else None
        )
        inputs = [
            TokensPrompt(
                prompt_token_ids=conversation_ids(self.tokenizer, [{"role": "user", "content": p}])
            )
            for p in prompts
        ]
        params = [
            SamplingParams(
                temperature=temperature,
                max_tokens=max_new_tokens,
                seed=seed + i,
                structured_outputs=structured,
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        return [str(out.outputs[0].text) for out in outputs]


def make_backend(
    kind: str,
    model: str,
    *,
    base_url: str = "",
    api_key_env: str = "OPENAI_API_KEY",
    concurrency: int = 8,
    timeout: float = 600.0,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    max_batch: int = 32,
    tokenizer: bool = True,
    thinking_off: bool = False,
    vllm: dict[str, Any] | None = None,
) -> Backend:
    """The backend `kind` (`transformers`, `vllm` or `openai`) serving `model`. An `openai` backend
    loads the model's tokenizer locally when `tokenizer` (sampling needs it, judging does not)."""
    if kind == "transformers":
        return TransformersBackend(
            model, dtype=dtype, trust_remote_code=trust_remote_code, max_batch=max_batch
        )
    if kind == "vllm":
        return VLLMBackend(model, dtype=dtype, trust_remote_code=trust_remote_code, **(vllm or {}))
    if kind == "openai":
        tok = models.load_tokenizer(model, trust_remote_code) if tokenizer else None
        return OpenAIBackend(
            base_url,
            model,
            tokenizer=tok,
            api_key_env=api_key_env,
            concurrency=concurrency,
            timeout=timeout,
            thinking_off=thinking_off,
        )
    raise ConfigError(f"unknown backend {kind!r} (use transformers, vllm or openai)")
