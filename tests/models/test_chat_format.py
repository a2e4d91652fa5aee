"""models/chat_format.py against the real chat templates, rendered by transformers.

The reference is `apply_chat_template(..., tokenize=False)` of transformers on a tiny
local tokenizer carrying each model's `chat_template` (the string of its
tokenizer_config.json). The templates are data here, copied from:

- Qwen2.5 Instruct (Qwen2.5-Coder Instruct ships the same one): wangqi/Jinja,
  Tests/Templates/ChatTemplateTests.swift, testQwenQwen2_5_0_5BInstruct.
- Llama 3.1 Instruct: openvinotoolkit/openvino.genai,
  tests/python_tests/tokenizer_configs.py, "meta-llama/Meta-Llama-3.1-8B-Instruct".
- Llama 3.2 Instruct: ggerganov/llama.cpp,
  models/templates/meta-llama-Llama-3.2-3B-Instruct.jinja.
- Gemma 2 IT: oxide-lab/Oxide-Lab, src-tauri/src/core/templates/gemma2.rs (the same
  string as google/gemma-*-it, e.g. wangqi/Jinja testGoogleGemma2bIt).
- DeepSeek-V2(-Lite)-Chat: ShishirPatil/gorilla,
  berkeley-function-call-leaderboard/bfcl/model_handler/local_inference/deepseek.py
  (quotes the tokenizer_config.json); the format is the one deepseek-ai/DeepSeek-V2's
  README documents.
"""

from __future__ import annotations

import jinja2
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from codeio_jax.models import chat_format
from codeio_jax.models.chat_format import render, segments

QWEN25_TEMPLATE = "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- messages[0]['content'] }}\n    {%- else %}\n        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\" and not message.tool_calls) %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}\n        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"  # noqa: E501

LLAMA31_TEMPLATE = "{{- bos_token }}\n{%- if custom_tools is defined %}\n    {%- set tools = custom_tools %}\n{%- endif %}\n{%- if not tools_in_user_message is defined %}\n    {%- set tools_in_user_message = true %}\n{%- endif %}\n{%- if not date_string is defined %}\n    {%- set date_string = \"26 Jul 2024\" %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n\n{#- This block extracts the system message, so we can slot it into the right place. #}\n{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content']|trim %}\n    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = \"\" %}\n{%- endif %}\n\n{#- System message + builtin tools #}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n{%- if builtin_tools is defined or tools is not none %}\n    {{- \"Environment: ipython\\n\" }}\n{%- endif %}\n{%- if builtin_tools is defined %}\n    {{- \"Tools: \" + builtin_tools | reject('equalto', 'code_interpreter') | join(\", \") + \"\\n\\n\"}}\n{%- endif %}\n{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n{%- if tools is not none and not tools_in_user_message %}\n    {{- \"You have access to the following functions. To call a function, please respond with JSON for a function call.\" }}\n    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}\n    {{- \"Do not use variables.\\n\\n\" }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4) }}\n        {{- \"\\n\\n\" }}\n    {%- endfor %}\n{%- endif %}\n{{- system_message }}\n{{- \"<|eot_id|>\" }}\n\n{#- Custom tools are passed in a user message with some extra guidance #}\n{%- if tools_in_user_message and not tools is none %}\n    {#- Extract the first user message so we can plug it in here #}\n    {%- if messages | length != 0 %}\n        {%- set first_user_message = messages[0]['content']|trim %}\n        {%- set messages = messages[1:] %}\n    {%- else %}\n        {{- raise_exception(\"Cannot put tools in the first user message when there's no first user message!\") }}\n{%- endif %}\n    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n    {{- \"Given the following functions, please respond with a JSON for a function call \" }}\n    {{- \"with its proper arguments that best answers the given prompt.\\n\\n\" }}\n    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}\n    {{- \"Do not use variables.\\n\\n\" }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4) }}\n        {{- \"\\n\\n\" }}\n    {%- endfor %}\n    {{- first_user_message + \"<|eot_id|>\"}}\n{%- endif %}\n\n{%- for message in messages %}\n    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n    {%- elif 'tool_calls' in message %}\n        {%- if not message.tool_calls|length == 1 %}\n            {{- raise_exception(\"This model only supports single tool-calls at once!\") }}\n        {%- endif %}\n        {%- set tool_call = message.tool_calls[0].function %}\n        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}\n            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n            {{- \"<|python_tag|>\" + tool_call.name + \".call(\" }}\n            {%- for arg_name, arg_val in tool_call.arguments | items %}\n                {{- arg_name + '=\"' + arg_val + '\"' }}\n                {%- if not loop.last %}\n                    {{- \", \" }}\n                {%- endif %}\n                {%- endfor %}\n            {{- \")\" }}\n        {%- else  %}\n            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n            {{- '{\"name\": \"' + tool_call.name + '\", ' }}\n            {{- '\"parameters\": ' }}\n            {{- tool_call.arguments | tojson }}\n            {{- \"}\" }}\n        {%- endif %}\n        {%- if builtin_tools is defined %}\n            {#- This means we're in ipython mode #}\n            {{- \"<|eom_id|>\" }}\n        {%- else %}\n            {{- \"<|eot_id|>\" }}\n        {%- endif %}\n    {%- elif message.role == \"tool\" or message.role == \"ipython\" %}\n        {{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}\n        {%- if message.content is mapping or message.content is iterable %}\n            {{- message.content | tojson }}\n        {%- else %}\n            {{- message.content }}\n        {%- endif %}\n        {{- \"<|eot_id|>\" }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n"  # noqa: E501

LLAMA32_TEMPLATE = r'''{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
'''  # noqa: E501

GEMMA2_TEMPLATE = r"""{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"""  # noqa: E501

DEEPSEEK_V2_TEMPLATE = "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"  # noqa: E501

# family -> (template, bos, eos, end-of-turn marker that closes an assistant turn)
REFERENCES = {
    "qwen2": (QWEN25_TEMPLATE, None, "<|im_end|>", "<|im_end|>"),
    "llama3": (LLAMA31_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>"),
    "gemma2": (GEMMA2_TEMPLATE, "<bos>", "<eos>", "<end_of_turn>"),
    "deepseek_v2": (DEEPSEEK_V2_TEMPLATE, chat_format.DEEPSEEK_BOS, chat_format.DEEPSEEK_EOS,
                    chat_format.DEEPSEEK_EOS),
}


def reference_tokenizer(template: str, bos: str | None, eos: str) -> PreTrainedTokenizerFast:
    """A real fast tokenizer, built locally, that carries `template`: only its chat
    template matters here, the vocabulary is a stub."""
    specials = [t for t in (bos, eos) if t]
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, **{t: i + 1 for i, t in enumerate(specials)}},
                                     unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=template, bos_token=bos,
                                   eos_token=eos, unk_token="[UNK]")


_TOKENIZERS: dict[str, PreTrainedTokenizerFast] = {}


def reference(messages, family: str, add_generation_prompt: bool = False, template: str | None = None,
              **kwargs) -> str:
    tmpl, bos, eos, _ = REFERENCES[family]
    key = template or family
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = reference_tokenizer(template or tmpl, bos, eos)
    return _TOKENIZERS[key].apply_chat_template(messages, tokenize=False,
                                                add_generation_prompt=add_generation_prompt, **kwargs)


def user(content: str) -> dict:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict:
    return {"role": "assistant", "content": content}


def system(content: str) -> dict:
    return {"role": "system", "content": content}


TRICKY = "  {{ x }} {% if y %}\n\t{#c#} '\"\\ café ✓ 数据 🙂 {\"a\": [1, {}]}\n\n\u3000"
CHATS = {
    "single_turn": [user("What does f(3) return?")],
    "single_turn_answered": [user("What does f(3) return?"), assistant("It returns 9.")],
    "system_single_turn": [system("You are a careful reasoner."), user("Predict the output.")],
    "revision": [  # CodeI/O++: first answer, feedback, revised answer
        system("You are a careful reasoner."),
        user("Given the code, predict the output for {\"n\": 3}."),
        assistant("Reasoning...\n```json\n{\"output\": 8}\n```"),
        user("The output you predicted is wrong: expected 9. Revise."),
        assistant("Revised reasoning...\n```json\n{\"output\": 9}\n```"),
    ],
    "two_rounds_no_system": [user("a"), assistant("b"), user("c"), assistant("d")],
    "tricky_content": [system(TRICKY), user(TRICKY), assistant(TRICKY), user("\n" + TRICKY)],
    "empty_and_blank": [user(""), assistant("   "), user("x"), assistant("")],
}
# Gemma has no system role: these chats are checked to raise instead.
HAS_SYSTEM = {name for name, chat in CHATS.items() if any(m["role"] == "system" for m in chat)}


def parity_cases():
    for family in REFERENCES:
        for name in CHATS:
            if family == "gemma2" and name in HAS_SYSTEM:
                continue
            yield pytest.param(family, name, id=f"{family}-{name}")


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize(("family", "chat_name"), list(parity_cases()))
def test_render_matches_template(family, chat_name, add_generation_prompt):
    chat = CHATS[chat_name]
    expected = reference(chat, family, add_generation_prompt)
    assert render(chat, family, add_generation_prompt) == expected


@pytest.mark.parametrize("family", ["qwen2", "llama3", "deepseek_v2"])
def test_system_message_after_the_first_turn_matches_template(family):
    chat = [user("a"), assistant("b"), system("from now on, be brief"), user("c")]
    assert render(chat, family, True) == reference(chat, family, True)


def test_qwen2_default_system_message():
    text = render([user("hi")], "qwen2")
    assert text == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                    "assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n")


@pytest.mark.parametrize("template", [LLAMA31_TEMPLATE, LLAMA32_TEMPLATE], ids=["3.1", "3.2"])
def test_llama3_date_string(template):
    chat = CHATS["revision"]
    for date in ("26 Jul 2024", "01 Jan 2025"):
        assert render(chat, "llama3", True, date_string=date) == reference(
            chat, "llama3", True, template=template, date_string=date)
    assert "Today Date: 26 Jul 2024\n\n" in render(chat, "llama3")


@pytest.mark.parametrize(("family", "chat_name"), list(parity_cases()))
def test_segments_join_to_render_and_flag_only_assistant_turns(family, chat_name):
    chat = CHATS[chat_name]
    pieces = segments(chat, family)
    assert "".join(text for text, _ in pieces) == render(chat, family)
    # Neighbours always differ in the flag, so the pieces are as few as they can be.
    assert all(a[1] != b[1] for a, b in zip(pieces, pieces[1:]))
    marker = REFERENCES[family][3]
    strip = family in ("llama3", "gemma2")  # their templates trim contents
    expected = [(m["content"].strip() if strip else m["content"]) + marker
                for m in chat if m["role"] == "assistant"]
    assert [text for text, loss in pieces if loss] == expected


def test_segments_of_the_revision_chat_qwen2():
    pieces = segments(CHATS["revision"], "qwen2")
    assert [loss for _, loss in pieces] == [False, True, False, True, False]
    assert pieces[1][0] == "Reasoning...\n```json\n{\"output\": 8}\n```<|im_end|>"
    assert pieces[2][0].startswith("\n<|im_start|>user\n") and pieces[2][0].endswith("<|im_start|>assistant\n")
    assert pieces[3][0] == "Revised reasoning...\n```json\n{\"output\": 9}\n```<|im_end|>"
    assert pieces[4][0] == "\n"  # after the end marker: the model stops before it


def test_segments_with_no_assistant_turn_are_all_unflagged():
    for family in REFERENCES:
        assert [loss for _, loss in segments([user("q")], family)] == [False]


@pytest.mark.parametrize("chat_name", sorted(HAS_SYSTEM))
def test_gemma2_rejects_system_messages_like_its_template(chat_name):
    chat = CHATS[chat_name]
    with pytest.raises(jinja2.exceptions.TemplateError, match="System role not supported"):
        reference(chat, "gemma2")
    with pytest.raises(ValueError, match="gemma2 has no system role"):
        render(chat, "gemma2")
    with pytest.raises(ValueError, match="gemma2 has no system role"):
        segments(chat, "gemma2")


def test_gemma2_rejects_a_system_message_anywhere():
    # Stricter than the template, which would print a `system` turn Gemma never saw.
    with pytest.raises(ValueError, match="message 2: gemma2 has no system role"):
        render([user("a"), assistant("b"), system("c")], "gemma2")


@pytest.mark.parametrize("chat", [
    [user("a"), user("b")],
    [assistant("a")],
    [user("a"), assistant("b"), assistant("c")],
], ids=["user-user", "assistant-first", "assistant-assistant"])
def test_gemma2_roles_must_alternate_like_its_template(chat):
    with pytest.raises(jinja2.exceptions.TemplateError, match="must alternate"):
        reference(chat, "gemma2")
    with pytest.raises(ValueError, match="must alternate"):
        render(chat, "gemma2")


@pytest.mark.parametrize("family", ["qwen2", "llama3", "deepseek_v2"])
def test_families_without_order_rules_render_any_order_like_their_template(family):
    chat = [assistant("a"), assistant("b"), user("c"), user("d")]
    assert render(chat, family) == reference(chat, family)


def test_unknown_family():
    with pytest.raises(ValueError, match="unknown chat family 'mistral'; expected one of qwen2, llama3"):
        render([user("a")], "mistral")
    with pytest.raises(ValueError, match="unknown chat family"):
        segments([user("a")], "mistral")


@pytest.mark.parametrize("family", list(REFERENCES))
def test_unknown_role(family):
    with pytest.raises(ValueError, match="message 1: unknown role 'tool'; expected one of system, user"):
        render([user("a"), {"role": "tool", "content": "b"}], family)


@pytest.mark.parametrize("content", [None, 3, ["a"], [{"type": "text", "text": "a"}], b"a"])
@pytest.mark.parametrize("family", list(REFERENCES))
def test_non_string_content(family, content):
    with pytest.raises(ValueError, match="message 0: content must be a str"):
        render([{"role": "user", "content": content}], family)


@pytest.mark.parametrize("messages, match", [
    ([], "messages is empty"),
    ([{"role": "user"}], "message 0: must be a dict with 'role' and 'content'"),
    (["hello"], "message 0: must be a dict"),
    ("hello", "messages must be a list"),
    ({"role": "user", "content": "a"}, "messages must be a list"),
])
def test_malformed_chats(messages, match):
    with pytest.raises(ValueError, match=match):
        render(messages, "qwen2")


def test_messages_are_not_modified():
    chat = [system(" s "), user(" u "), assistant(" a ")]
    before = [dict(m) for m in chat]
    for family in ("qwen2", "llama3", "deepseek_v2"):
        render(chat, family, True)
        segments(chat, family)
    assert chat == before
