"""A folder's own chat template (models/chat_template.py) against transformers'
`apply_chat_template` with the same template, on the real templates of the four
families and the chats of test_chat_format; its loss segments against
transformers' rendering, chat_format's segments and the real SmolLM2 export;
where a folder's template is found; and the errors. (The chat model's use of it:
tests/sampling/test_chat_model.py; the SeqIO tasks': tests/tasks/.)"""

import json

import pytest

from codeio_jax.models import chat_format
from codeio_jax.models.chat_template import ChatTemplateError, FolderChatTemplate, folder_template
from tests.models.gguf_files import smollm2_tokenizer_folder
from tests.models.test_chat_format import CHATS, REFERENCES, assistant, parity_cases, reference, system, user

# ChatML as SmolLM2-Instruct's tokenizer_config.json has it (its default system prompt included).
SMOLLM2_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
                    "{{ '<|im_start|>assistant\n' }}{% endif %}")


def family_template(family: str) -> FolderChatTemplate:
    source, bos, eos, _ = REFERENCES[family]
    return FolderChatTemplate(source, {"eos_token": eos, **({"bos_token": bos} if bos else {})})


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize(("family", "chat_name"), list(parity_cases()))
def test_a_folder_template_renders_as_transformers_does(family, chat_name, add_generation_prompt):
    expected = reference(CHATS[chat_name], family, add_generation_prompt)
    assert family_template(family).render(CHATS[chat_name], add_generation_prompt) == expected


def trained_texts(pieces):
    return [text for text, trained in pieces if trained]


@pytest.mark.parametrize(("family", "chat_name"), list(parity_cases()))
def test_segments_of_a_folder_template_join_to_transformers_rendering(family, chat_name):
    chat = CHATS[chat_name]
    pieces = family_template(family).segments(chat)
    assert "".join(text for text, _ in pieces) == reference(chat, family)
    assert all(a[1] != b[1] for a, b in zip(pieces, pieces[1:]))
    marker = REFERENCES[family][3]
    strip = family in ("llama3", "gemma2")  # their templates trim contents
    assert trained_texts(pieces) == [(m["content"].strip() if strip else m["content"]) + marker
                                     for m in chat if m["role"] == "assistant"]
    # The same cut as the family's own segments, which the SeqIO tasks use without a folder.
    assert pieces == chat_format.segments(chat, family)


@pytest.mark.parametrize("family", ["qwen2", "llama3", "deepseek_v2"])
def test_segments_of_a_chat_that_opens_with_the_assistant(family):
    chat = [assistant("a"), assistant("b"), user("c"), user("d")]
    pieces = family_template(family).segments(chat)
    assert "".join(text for text, _ in pieces) == reference(chat, family)
    assert pieces == chat_format.segments(chat, family)


@pytest.fixture(scope="module")
def smollm2_folder(tmp_path_factory):
    """The real SmolLM2 export's tokenizer files, and transformers' tokenizer on them."""
    from transformers import AutoTokenizer

    folder = smollm2_tokenizer_folder(tmp_path_factory.mktemp("smollm2"))
    return folder, AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("chat_name", sorted(CHATS))
def test_segments_of_the_smollm2_export_template(smollm2_folder, chat_name):
    folder, tokenizer = smollm2_folder
    chat = CHATS[chat_name]
    pieces = FolderChatTemplate.from_folder(folder).segments(chat)
    assert "".join(text for text, _ in pieces) == tokenizer.apply_chat_template(chat, tokenize=False)
    assert all(a[1] != b[1] for a, b in zip(pieces, pieces[1:]))
    # Content and <|im_end|> trained; the newline after it, headers and system turns not.
    assert trained_texts(pieces) == [m["content"] + "<|im_end|>" for m in chat if m["role"] == "assistant"]
    if chat[0]["role"] != "system":  # the template's default system message is context, never trained
        default = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        assert pieces[0][0].startswith(default + "<|im_start|>user\n") and not pieces[0][1]


# Not prefix-stable, in the two ways real templates are: Qwen3's drops the reasoning of
# assistant turns before the last one; DeepSeek-R1's and Qwen3's thinking generation
# prompts open the reply with a "<think>" their rendered turns do not have.
REWRITES_EARLIER_TURNS = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' and not loop.last %}"
    "{{ m.content.split('</think>')[-1] | trim }}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
PROMPT_IS_NOT_THE_HEADER = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}")


@pytest.mark.parametrize("source,says", [
    (REWRITES_EARLIER_TURNS, "through message 1 does not render as the start of the whole chat"),
    (PROMPT_IS_NOT_THE_HEADER, "up to message 1 with the generation prompt does not render"),
], ids=["rewrites-earlier-turns", "prompt-is-not-the-header"])
def test_a_template_that_is_not_prefix_stable_raises(source, says):
    template = FolderChatTemplate(source, {})
    chat = [user("q"), assistant("<think>hmm</think>a"), user("again"), assistant("<think>so</think>b")]
    with pytest.raises(ChatTemplateError, match="is not prefix-stable: the chat " + says):
        template.segments(chat)


def test_segments_refuse_what_is_no_chat():
    template = family_template("qwen2")
    with pytest.raises(ValueError, match="messages is empty"):
        template.segments([])
    with pytest.raises(ValueError, match="message 1: content must be a str"):
        template.segments([system("s"), {"role": "user", "content": [{"type": "text", "text": "x"}]}])


def test_the_template_comes_from_the_jinja_file_first_then_the_config(tmp_path):
    assert FolderChatTemplate.from_folder(tmp_path) is None
    config = {"chat_template": SMOLLM2_TEMPLATE, "eos_token": {"content": "<|im_end|>", "special": True},
              "bos_token": "<|im_start|>"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    template = FolderChatTemplate.from_folder(tmp_path)
    assert template.special_tokens == {"eos_token": "<|im_end|>", "bos_token": "<|im_start|>"}
    assert template.render([{"role": "user", "content": "Hi"}], add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    (tmp_path / "chat_template.jinja").write_text("{{ bos_token }}{% for m in messages %}[{{ m.content }}]"
                                                  "{% endfor %}")
    assert FolderChatTemplate.from_folder(tmp_path).render([{"role": "user", "content": "x"}]) == "<|im_start|>[x]"


def test_named_templates_take_the_default_one(tmp_path):
    config = {"chat_template": [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "chat"}]}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert FolderChatTemplate.from_folder(tmp_path).render([]) == "chat"


@pytest.mark.parametrize("source,says", [
    ("{% if %}", "is not a template we can render"),
    ("{% generation %}{{ messages[0].content }}{% endgeneration %}", "generation"),
    ("{{ raise_exception('System role not supported') }}", "System role not supported"),
    ("{{ ''.__class__.__mro__ }}", "could not render"),  # the sandbox refuses it
])
def test_templates_we_cannot_render_say_so(source, says):
    with pytest.raises(ChatTemplateError, match=says):
        FolderChatTemplate(source, {}).render([{"role": "user", "content": "x"}])


def test_a_folder_asked_for_its_template_must_have_one(tmp_path):
    with pytest.raises(ChatTemplateError, match="does not exist"):
        folder_template(tmp_path / "nope")
    with pytest.raises(ChatTemplateError, match="must be a local folder"):
        folder_template("gs://bucket/model")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    with pytest.raises(ChatTemplateError, match="has no chat template: neither chat_template.jinja nor"):
        folder_template(tmp_path)
    (tmp_path / "chat_template.jinja").write_text(SMOLLM2_TEMPLATE)
    assert folder_template(tmp_path).source == SMOLLM2_TEMPLATE


def test_a_config_that_is_not_json_says_where(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{nope")
    with pytest.raises(ChatTemplateError, match="tokenizer_config.json is not JSON"):
        FolderChatTemplate.from_folder(tmp_path)
