"""The OpenAI-compatible server on loopback, driven by the project's own OpenAI
teacher over real HTTP, and the local teacher on the same model."""

import http.client
import json
import threading

import pytest

from codeio_jax.sampling.chat import ChatModel
from codeio_jax.sampling.server import make_server
from codeio_jax.teachers.local import LocalTeacher
from codeio_jax.teachers.openai_compatible import OpenAICompatibleTeacher

NAME = "tiny-qwen"


@pytest.fixture(scope="module")
def chat(chat_folder):
    return ChatModel.from_folder(chat_folder)


@pytest.fixture(scope="module")
def server(chat):
    # A generous wait for the batch to fill: the test counts generate calls.
    server = make_server(chat, "127.0.0.1", 0, NAME, max_batch=8, batch_wait_s=0.2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def base_url(server):
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def conversation(i):
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"What is {i} + {i}?"}]


def request(server, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    payload = json.loads(response.read())
    conn.close()
    return response.status, payload


def test_the_teacher_gets_batched_replies_equal_to_the_local_teacher(server, chat_folder):
    conversations = [conversation(i) for i in range(8)]
    calls = server.batcher.generate_calls
    params = {"max_tokens": 12, "temperature": 0}
    with OpenAICompatibleTeacher(base_url(server), NAME, api_key_env=None, max_concurrency=8,
                                 params=params) as teacher:
        replies = teacher.reply(conversations)
    assert all(r.ok for r in replies), [r.error for r in replies]
    assert server.batcher.generate_calls - calls < len(conversations)  # concurrent requests shared batches
    for r in replies:
        assert r.finish_reason in ("stop", "length") and r.prompt_tokens > 20 and 1 <= r.completion_tokens <= 12
    # Greedy replies do not depend on what they were batched with: the local teacher agrees.
    local = LocalTeacher(chat_folder, max_new_tokens=12, batch_size=3).reply(conversations)
    assert [r.text for r in replies] == [r.text for r in local]
    assert [r.completion_tokens for r in replies] == [r.completion_tokens for r in local]


def test_the_response_has_the_openai_shape(server):
    status, payload = request(server, "POST", "/v1/chat/completions",
                              {"model": NAME, "messages": conversation(1), "max_tokens": 5, "seed": 3})
    assert status == 200
    assert payload["object"] == "chat.completion" and payload["model"] == NAME
    assert payload["id"].startswith("chatcmpl-")
    choice = payload["choices"][0]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    usage = payload["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_seeded_sampling_repeats_and_stop_strings_cut_the_text(server):
    body = {"messages": conversation(2), "max_tokens": 24, "temperature": 1.0, "seed": 11}
    first = request(server, "POST", "/v1/chat/completions", body)[1]["choices"][0]
    again = request(server, "POST", "/v1/chat/completions", body)[1]["choices"][0]
    assert first == again
    text = first["message"]["content"]
    assert len(text) >= 6, text
    stop = text[3:5]
    cut = request(server, "POST", "/v1/chat/completions", {**body, "stop": [stop, "never-there"]})[1]["choices"][0]
    assert cut["message"]["content"] == text[:text.find(stop)] and cut["finish_reason"] == "stop"


def test_models_lists_the_model(server):
    status, payload = request(server, "GET", "/v1/models")
    assert status == 200 and [m["id"] for m in payload["data"]] == [NAME]


@pytest.mark.parametrize("body, status, field, words", [
    ({"messages": conversation(1), "n": 2}, 400, "n", "not supported"),
    ({"messages": conversation(1), "stream": True}, 400, "stream", "not supported"),
    ({"messages": conversation(1), "temperature": 5}, 400, "temperature", "in [0, 2]"),
    ({"messages": conversation(1), "max_tokens": 0}, 400, "max_tokens", "positive integer"),
    ({"messages": conversation(1), "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "at most 4"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages", "unknown role"),
    ({"temperature": 0}, 400, "messages", "required"),
    ({"messages": [{"role": "user", "content": "x " * 300}]}, 400, "messages", "maximum context length"),
    ({"messages": conversation(1), "model": "gpt-9"}, 404, "model", "does not exist"),
    (b"{not json", 400, None, "not valid JSON"),
])
def test_bad_requests_get_an_openai_error(server, body, status, field, words):
    got, payload = request(server, "POST", "/v1/chat/completions", body)
    assert got == status
    assert payload["error"]["param"] == field and words in payload["error"]["message"]
    assert payload["error"]["type"] == "invalid_request_error"


def test_the_teacher_reports_a_refused_request_as_a_failed_reply(server):
    with OpenAICompatibleTeacher(base_url(server), NAME, api_key_env=None, max_retries=0,
                                 params={"n": 3}) as teacher:
        reply = teacher.reply([conversation(1)])[0]
    assert not reply.ok and "HTTP 400" in reply.error and "not supported" in reply.error


def test_the_local_teacher_fails_only_the_bad_conversations(chat_folder):
    teacher = LocalTeacher(chat_folder, max_new_tokens=8, temperature=0.8, seed=5)
    conversations = [conversation(1), [{"role": "robot", "content": "hi"}],
                     [{"role": "user", "content": "x " * 300}], conversation(2)]
    first = teacher.reply(conversations)
    assert [r.ok for r in first] == [True, False, False, True]
    assert "unknown role" in first[1].error and "exceeds the model's 256" in first[2].error
    # Each conversation's seed comes from (seed, its prompt): asked alone, the same reply.
    assert teacher.reply([conversations[3]])[0].text == first[3].text
    assert teacher.usage.as_dict()["requests"] == 3 and teacher.usage.as_dict()["failed"] == 2


def test_codeio_jax_serve_answers_until_interrupted(chat_folder):
    import signal
    import subprocess
    import sys

    # Started as a background job of a script starts it (`serve ... &`, a CI runner):
    # SIGINT inherited ignored, which Python would otherwise leave ignored.
    process = subprocess.Popen([sys.executable, "-m", "codeio_jax.cli", "serve", "--model", str(chat_folder),
                                "--port", "0", "--name", NAME], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        line = process.stdout.readline()
        assert line.startswith(f"serving {NAME} (qwen2 template"), line + process.stderr.read()
        url = line.split()[-1]
        with OpenAICompatibleTeacher(url, NAME, api_key_env=None, params={"max_tokens": 4}) as teacher:
            assert teacher.reply([conversation(3)])[0].ok
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGUSR1)  # serve prints its threads' stacks
            try:
                _, err = process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                _, err = process.communicate()
            pytest.fail(f"serve did not exit within 120 s of SIGINT; its stderr:\n{err[-6000:]}")
    assert process.returncode == 130 and "interrupted" in err, err[-3000:]


def test_codeio_jax_serve_refuses_a_folder_without_a_model(tmp_path, capsys):
    from codeio_jax.cli import main

    assert main(["serve", "--model", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
