"""The OpenAI-compatible path: `alpo serve` on loopback and the `openai` backend against it."""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alpo.exceptions import InputError
from alpo.generation import OpenAIBackend, SampleRequest
from alpo.judging import parse_scores
from alpo.launch import free_port
from alpo.models import load_tokenizer

KEY = "sk-test-0123456789"


@pytest.fixture(scope="module")
def server(tiny_model):
    """`alpo serve` for the tiny model on a free loopback port, with an API key."""
    port = free_port()
    env = {**os.environ, "ALPO_TEST_KEY": KEY}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "alpo_cli",
            "serve",
            str(tiny_model),
            "--port",
            str(port),
            "--api-key-env",
            "ALPO_TEST_KEY",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            get(url + "/v1/models", KEY)
            break
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read()) from None
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def get(url, key=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        return json.loads(r.read())


def test_models_route_and_api_key(server, tiny_model):
    with pytest.raises(urllib.error.HTTPError) as info:
        get(server + "/v1/models")
    assert info.value.code == 401
    listing = get(server + "/v1/models", KEY)
    assert listing["data"][0]["id"] == str(tiny_model)


@pytest.fixture
def backend(server, tiny_model, monkeypatch):
    monkeypatch.setenv("ALPO_TEST_KEY", KEY)
    return OpenAIBackend(
        server,
        str(tiny_model),
        tokenizer=load_tokenizer(str(tiny_model)),
        api_key_env="ALPO_TEST_KEY",
        concurrency=4,
        timeout=60,
    )


def test_sampling_returns_token_ids_that_decode_to_the_text(backend):
    tok = backend.tokenizer
    prompt = tok("1. hello\n2.", add_special_tokens=False)["input_ids"]
    reqs = [
        SampleRequest(prompt, n=3, temperature=1.0, max_new_tokens=20, seed=5),
        SampleRequest(prompt, n=2, temperature=1.0, max_new_tokens=30, stop_lines=1, seed=6),
    ]
    first, second = backend.sample(reqs)
    assert len(first) == 3 and len(second) == 2
    for ids in first + second:
        assert ids and all(isinstance(t, int) for t in ids)
    for ids in second:  # cut at the first line break, or ran out of tokens first
        text = backend.decode(ids)
        assert text.count("\n") <= 1 and (
            text.endswith("\n") or len(ids) == 30 or ids[-1] == tok.eos_token_id
        )
    assert backend.sample(reqs[:1]) == [first]  # seeded: the same request, the same samples


def test_chat_with_the_score_schema_gives_valid_scores(backend):
    replies = backend.chat(["Rate A, B and C."] * 2, score_letters=3, temperature=0.7, seed=1)
    for reply in replies:
        scores, why = parse_scores(reply, 3)
        assert scores is not None or "degenerate" in why, reply


def test_the_sample_stage_runs_against_the_server(cli, server, examples_data, tiny_model, tmp_path):
    from test_sampling import check_outputs

    work = tmp_path / "openai"
    out = cli(
        "train",
        "--pair",
        "en-zh",
        "--stage",
        "sample",
        "--data",
        str(examples_data),
        "--workdir",
        str(work),
        "--set",
        f"sample.model='{tiny_model}'",
        "--set",
        "sample.backend='openai'",
        "--set",
        f"sample.base_url='{server}'",
        "--set",
        "sample.api_key_env='ALPO_TEST_KEY'",
        "--set",
        "judge.backend='openai'",
        "--set",
        f"judge.model='{tiny_model}'",
        "--set",
        f"judge.base_url='{server}'",
        "--set",
        "judge.api_key_env='ALPO_TEST_KEY'",
        "--set",
        "sample.k=3",
        "--set",
        "judge.votes=1",
        "--set",
        "sample.max_new_tokens=40",
        "--json",
        env={"ALPO_TEST_KEY": KEY},
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])["sample"]
    assert summary["segments"] > 0
    check_outputs(work, examples_data, tiny_model)
    assert KEY not in out.stdout + out.stderr


class Flaky(BaseHTTPRequestHandler):
    """Answers 503 to the first `fail` requests, then a completion; counts what it saw."""

    fail = 2
    seen: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Flaky.seen.append((self.headers.get("Authorization"), body))
        if body.get("model") == "bad":
            status, payload = 400, {"error": {"message": "unknown model"}}
        elif len(Flaky.seen) <= Flaky.fail:
            status, payload = 503, {"error": {"message": "busy"}}
        else:
            status, payload = 200, {"choices": [{"index": 0, "message": {"content": "ok"}}]}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def flaky():
    Flaky.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_retries_with_backoff_then_succeeds(flaky, monkeypatch):
    monkeypatch.setenv("MY_KEY", KEY)
    client = OpenAIBackend(
        flaky, "m", api_key_env="MY_KEY", retries=3, backoff=0.01, thinking_off=True
    )
    assert client.chat(["hi"], score_letters=2) == ["ok"]
    assert len(Flaky.seen) == 3 and client.calls == 3
    assert all(auth == f"Bearer {KEY}" for auth, _ in Flaky.seen)
    body = Flaky.seen[-1][1]
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["A", "B"]


def test_gives_up_with_one_line_and_no_key(flaky, monkeypatch):
    monkeypatch.setenv("MY_KEY", KEY)
    Flaky.fail = 100
    try:
        client = OpenAIBackend(flaky, "m", api_key_env="MY_KEY", retries=2, backoff=0.01)
        with pytest.raises(InputError, match="no answer after 3 tries") as info:
            client.chat(["hi"])
        assert KEY not in str(info.value) and "\n" not in str(info.value)
        with pytest.raises(InputError, match="HTTP 400"):
            OpenAIBackend(flaky, "bad", retries=2, backoff=0.01).chat(["hi"])
    finally:
        Flaky.fail = 2


def test_unreachable_server_is_an_input_error():
    client = OpenAIBackend(
        f"http://127.0.0.1:{free_port()}", "m", retries=1, backoff=0.01, timeout=2
    )
    with pytest.raises(InputError, match="no answer after 2 tries"):
        client.chat(["hi"])


def post(url, body, key=KEY):
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def test_bad_requests_get_400_and_the_server_stays_up(server, tiny_model):
    for body in (
        {"model": "m", "prompt": [10**9]},
        {"model": "m", "prompt": []},
        {"model": "m"},
        {"model": "m", "messages": "hi"},
    ):
        path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        with pytest.raises(urllib.error.HTTPError) as info:
            post(server + path, body)
        assert info.value.code == 400
    reply = post(
        server + "/v1/completions",
        {"model": "m", "prompt": "1.", "max_tokens": 3, "return_token_ids": True},
    )
    assert len(reply["choices"][0]["token_ids"]) <= 3


def test_serve_refuses_an_empty_key_variable(cli, tiny_model):
    proc = cli(
        "serve",
        str(tiny_model),
        "--port",
        "0",
        "--api-key-env",
        "ALPO_UNSET_KEY",
        check=False,
        env={"ALPO_UNSET_KEY": ""},
    )
    assert proc.returncode == 1 and "ALPO_UNSET_KEY" in proc.stderr
