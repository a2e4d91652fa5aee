"""ChatModel.from_folder: the folder's own chat template, or the family's when one is forced."""

import json

from tests.models.test_chat_template import SMOLLM2_TEMPLATE


def test_the_chat_model_uses_the_folder_template_unless_a_family_is_forced(chat_folder, tmp_path):
    import shutil

    from codeio_jax.models import chat_format
    from codeio_jax.sampling.chat import ChatModel

    folder = tmp_path / "model"
    shutil.copytree(chat_folder, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": SMOLLM2_TEMPLATE}))
    chat = [{"role": "user", "content": "What does f(3) return?"}]
    own = ChatModel.from_folder(folder)
    assert own.template is not None and "chat template" in own.template_name
    text = own.template.render(chat, add_generation_prompt=True)
    assert "SmolLM" in text
    assert own.encode(chat) == own.tokenizer.encode(text, add_special_tokens=False).ids
    assert own.tokenizer.token_to_id("<|im_end|>") in own.stop_token_ids
    forced = ChatModel.from_folder(folder, family="qwen2")
    assert forced.template is None and forced.family == "qwen2"
    assert forced.encode(chat) == forced.tokenizer.encode(
        chat_format.render(chat, "qwen2", add_generation_prompt=True), add_special_tokens=False).ids
