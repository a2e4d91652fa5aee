"""A small byte-level BPE `tokenizer.json`, trained on the data at hand.

For CPU smoke runs and the demo, where no released tokenizer can be
downloaded: it has the chat family's special tokens (so chat-formatted text
keeps its markers as single ids) and a tokenizer_config.json naming the
end-of-turn token as EOS, so HFTokenizerVocabulary reads it like a real model's.
Real runs use the base model's own tokenizer.json.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = {
    # family: (special tokens, end-of-turn token used as EOS)
    "qwen2": (["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "<|im_end|>"),
    "llama3": (["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|eot_id|>"),
    "gemma2": (["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"], "<end_of_turn>"),
}


def train_bpe(texts: Iterable[str], folder: str | Path, family: str, vocab_size: int = 2048) -> Path:
    """Train on `texts`, write tokenizer.json and tokenizer_config.json into
    `folder`; returns the tokenizer.json path. Deterministic for the same texts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if family not in SPECIAL_TOKENS:
        raise ValueError(f"family must be one of {sorted(SPECIAL_TOKENS)}, got {family!r}")
    specials, eos = SPECIAL_TOKENS[family]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": eos, "pad_token": specials[0]}) + "\n")
    return folder / "tokenizer.json"
