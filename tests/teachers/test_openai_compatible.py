"""The OpenAI-compatible teacher over real HTTP to a server on loopback."""

import pytest

from codeio_jax.teachers.openai_compatible import OpenAICompatibleTeacher, TeacherError
from tests.teachers.chat_server import ChatServer


def conversation(text):
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


def teacher(server, **kwargs):
    options = dict(api_key_env=None, max_concurrency=4, backoff_base_s=0.01, backoff_max_s=0.05)
    options.update(kwargs)
    return OpenAICompatibleTeacher(server.base_url, "test-model", **options)


def test_replies_in_order_with_tokens_counted():
    with ChatServer() as server, teacher(server) as t:
        replies = t.reply([conversation(f"question {i}") for i in range(10)])
        assert [r.text for r in replies] == [f"echo: question {i}" for i in range(10)]
        usage = t.usage.as_dict()
        assert usage["requests"] == 10 and usage["prompt_tokens"] == 20 and usage["completion_tokens"] == 20


def test_concurrency_is_bounded():
    with ChatServer(delay_s=0.05) as server, teacher(server, max_concurrency=3) as t:
        t.reply([conversation(f"q{i}") for i in range(12)])
        assert server.max_in_flight == 3


def test_retries_then_succeeds_on_429_and_5xx():
    with ChatServer() as server, teacher(server) as t:
        replies = t.reply([conversation("a [[status:429:2]]"), conversation("b [[status:503:1]]")])
        assert all(r.ok for r in replies)
        assert server.attempts == {"a [[status:429:2]]": 3, "b [[status:503:1]]": 2}
        assert t.usage.as_dict()["retries"] == 3


def test_failures_are_replies_not_exceptions():
    with ChatServer(hang_s=2.0) as server, teacher(server, max_retries=2, timeout_s=0.3) as t:
        bad_request, garbage, hang, fine = t.reply([
            conversation("x [[status:400]]"), conversation("y [[garbage]]"),
            conversation("z [[hang]]"), conversation("fine")])
        assert "HTTP 400" in bad_request.error and server.attempts["x [[status:400]]"] == 1
        assert "unreadable response" in garbage.error and server.attempts["y [[garbage]]"] == 3
        assert "no answer within" in hang.error
        assert fine.ok and fine.text == "echo: fine"
        assert t.usage.as_dict()["failed"] == 3


def test_cache_means_a_rerun_never_pays_twice(tmp_path):
    params = {"temperature": 0.0, "max_tokens": 64}
    with ChatServer() as server:
        with teacher(server, cache_dir=tmp_path, params=params) as t:
            first = t.reply([conversation("cached?"), conversation("also")])
        with teacher(server, cache_dir=tmp_path, params=params) as t:
            again = t.reply([conversation("cached?"), conversation("also")])
            assert [r.text for r in again] == [r.text for r in first]
            assert all(r.cached for r in again) and t.usage.as_dict()["cached"] == 2
        assert server.hits == 2
        with teacher(server, cache_dir=tmp_path, params={**params, "temperature": 0.7}) as t:
            t.reply([conversation("cached?")])  # other sampling parameters: another key
        assert server.hits == 3


def test_api_key_is_sent_from_the_environment(monkeypatch):
    monkeypatch.setenv("CODEIO_TEST_KEY", "sk-test")
    with ChatServer() as server:
        with teacher(server, api_key_env="CODEIO_TEST_KEY") as t:
            assert t.reply([conversation("hi")])[0].ok
        with teacher(server, api_key_env=None) as t:
            assert t.reply([conversation("ho")])[0].ok
    assert server.authorizations == ["Bearer sk-test", None]


def test_bad_configuration_is_refused():
    with pytest.raises(TeacherError, match="http"):
        OpenAICompatibleTeacher("ftp://example", "m")
    with pytest.raises(TeacherError, match="max_concurrency"):
        OpenAICompatibleTeacher("http://127.0.0.1:1/v1", "m", max_concurrency=0)
