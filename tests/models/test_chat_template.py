"""A folder's own chat template (models/chat_template.py) against transformers'
`apply_chat_template` with the same template, on the real templates of the four
families and the chats of test_chat_format; where a folder's template is found;
and the errors. (The chat model's use of it: tests/sampling/test_chat_model.py.)"""

import json

import pytest

from codeio_jax.models.chat_template import ChatTemplateError, FolderChatTemplate
from tests.models.test_chat_format import CHATS, REFERENCES, parity_cases, reference

# ChatML as SmolLM2-Instruct's tokenizer_config.json has it (its default system prompt included).
SMOLLM2_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
                    "{{ '<|im_start|>assistant\n' }}{% endif %}")


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize(("family", "chat_name"), list(parity_cases()))
def test_a_folder_template_renders_as_transformers_does(family, chat_name, add_generation_prompt):
    source, bos, eos, _ = REFERENCES[family]
    template = FolderChatTemplate(source, {"eos_token": eos, **({"bos_token": bos} if bos else {})})
    expected = reference(CHATS[chat_name], family, add_generation_prompt)
    assert template.render(CHATS[chat_name], add_generation_prompt) == expected


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


def test_a_config_that_is_not_json_says_where(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{nope")
    with pytest.raises(ChatTemplateError, match="tokenizer_config.json is not JSON"):
        FolderChatTemplate.from_folder(tmp_path)
