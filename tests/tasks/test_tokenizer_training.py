"""The small BPE tokenizer the demo and smoke runs train on their own data."""

import pytest

from codeio_jax.models.chat_format import render
from tasks.tokenizer_training import train_bpe

pytest.importorskip("seqio")

from tasks.vocabularies import HFTokenizerVocabulary  # noqa: E402

TEXTS = ["def f(x):\n    return x * 2\n", "What does the code return? {\"output\": 4}"] * 50


def test_trained_tokenizer_keeps_chat_markers_and_round_trips(tmp_path):
    path = train_bpe(TEXTS, tmp_path / "a", family="qwen2", vocab_size=400)
    vocabulary = HFTokenizerVocabulary(path)
    text = render([{"role": "user", "content": "def f(x): ünïcode"}, {"role": "assistant", "content": "ok"}],
                  "qwen2")
    ids = vocabulary.encode(text)
    markers = [vocabulary.tokenizer.token_to_id(t) for t in ("<|im_start|>", "<|im_end|>")]
    assert ids.count(markers[0]) == text.count("<|im_start|>") and vocabulary.eos_id == markers[1]
    assert vocabulary.tokenizer.decode(ids, skip_special_tokens=False) == text
    again = train_bpe(TEXTS, tmp_path / "b", family="qwen2", vocab_size=400)
    assert again.read_bytes() == path.read_bytes()
    with pytest.raises(ValueError, match="family"):
        train_bpe(TEXTS, tmp_path / "c", family="mamba")
