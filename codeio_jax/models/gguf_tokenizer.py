"""A GGUF's tokenizer as tokenizer.json and tokenizer_config.json.

A GGUF stores the vocabulary, the merges, each token's type and the special
token ids as metadata (tokenizer.ggml.*); how text is split before the merges
is named, not written: tokenizer.ggml.pre says which of llama.cpp's built-in
splits the model was trained with. We build the same tokenizer with the
`tokenizers` library, splitting as llama.cpp does for that name, so the folder
tokenizes as the GGUF does in llama.cpp (and as the model's own tokenizer.json
did). Byte-level BPE only (tokenizer.ggml.model `gpt2`: Llama 3, Qwen 2, SmolLM2).
"""

from __future__ import annotations

from typing import Any

from codeio_jax.models.gguf import GGUFError

# llama.cpp's token types (tokenizer.ggml.token_type).
CONTROL, USER_DEFINED = 3, 4

_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen 2's split is Llama 3's with every digit on its own.
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")


def _split_by(pattern: str):
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def _gpt2():
    from tokenizers import pre_tokenizers

    # ByteLevel's own regex is GPT-2's.
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _smollm():
    from tokenizers import pre_tokenizers

    # llama.cpp's smollm split: every digit on its own, then GPT-2's regex.
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _gpt2()])


# tokenizer.ggml.pre -> (pre-tokenizer, llama.cpp's ignore_merges, its add_bos default, its clean_spaces).
# ignore_merges: a pre-token that is itself in the vocabulary is taken whole.
_PRE = {
    "gpt-2": (_gpt2, False, False, True),
    "smollm": (_smollm, False, False, False),
    "qwen2": (lambda: _split_by(_QWEN2_SPLIT), False, False, False),
    **{name: (lambda: _split_by(_LLAMA3_SPLIT), True, True, True) for name in ("llama-bpe", "llama3", "llama-v3")},
}


def _pre(meta: dict[str, Any]) -> tuple:
    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise GGUFError(f"tokenizer.ggml.model is {model!r}; only byte-level BPE ('gpt2', as Llama 3, Qwen 2 and "
                        "SmolLM2 files have) is supported")
    pre = meta.get("tokenizer.ggml.pre")
    if pre not in _PRE:
        raise GGUFError(f"tokenizer.ggml.pre is {pre!r}; the splits supported are {', '.join(sorted(_PRE))}")
    return _PRE[pre]


def build_tokenizer(meta: dict[str, Any], vocab_size: int):
    """A `tokenizers.Tokenizer` from a GGUF's metadata, with the ids the model's
    embedding rows have."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    pre_tokenizer, ignore_merges, _, _ = _pre(meta)
    tokens = meta.get("tokenizer.ggml.tokens")
    if not tokens:
        raise GGUFError("the metadata has no tokenizer.ggml.tokens")
    if len(tokens) != vocab_size:
        raise GGUFError(f"tokenizer.ggml.tokens has {len(tokens)} tokens; the embedding has {vocab_size} rows")
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        seen: set[str] = set()
        twice = next(t for t in tokens if t in seen or seen.add(t))
        raise GGUFError(f"tokenizer.ggml.tokens holds {twice!r} more than once")
    merges = [tuple(merge.split(" ")) for merge in meta.get("tokenizer.ggml.merges", [])]
    bad = next((m for m in merges if len(m) != 2), None)
    if bad is not None:
        raise GGUFError(f"tokenizer.ggml.merges holds {' '.join(bad)!r}, not two tokens")
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
    tokenizer.pre_tokenizer = pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()
    # Control tokens (<|im_start|>, <|begin_of_text|>) are matched whole and are special;
    # user-defined ones (<think>) are matched whole too, as llama.cpp does, but are text.
    types = meta.get("tokenizer.ggml.token_type") or []
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                  for t, kind in zip(tokens, types) if kind == CONTROL])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False)
                          for t, kind in zip(tokens, types) if kind == USER_DEFINED])
    bos, eos = _flag(meta, "add_bos_token"), _flag(meta, "add_eos_token")
    special = special_tokens(meta)
    for name, wanted in (("bos_token", bos), ("eos_token", eos)):
        if wanted and name not in special:
            raise GGUFError(f"tokenizer.ggml.add_{name} is set but the metadata names no {name} id")
    if bos or eos:
        first = [special["bos_token"]] if bos else []
        last = [special["eos_token"]] if eos else []
        tokenizer.post_processor = processors.TemplateProcessing(
            single=" ".join(first + ["$A"] + last), pair=" ".join(first + ["$A"] + last + first + ["$B"] + last),
            special_tokens=[(t, vocab[t]) for t in dict.fromkeys(first + last)])
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def _flag(meta: dict[str, Any], name: str) -> bool:
    """tokenizer.ggml.add_bos_token / add_eos_token, defaulting as llama.cpp
    does for the split (Llama 3 adds a BOS unless told not to)."""
    default = _pre(meta)[2] if name == "add_bos_token" else False
    return bool(meta.get(f"tokenizer.ggml.{name}", default))


def special_tokens(meta: dict[str, Any]) -> dict[str, str]:
    """bos/eos/unk/pad token -> its text, for the ids the metadata names."""
    tokens = meta["tokenizer.ggml.tokens"]
    names = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id",
             "pad_token": "padding_token_id"}
    special = {}
    for name, key in names.items():
        index = meta.get(f"tokenizer.ggml.{key}")
        if index is None:
            continue
        if not 0 <= index < len(tokens):
            raise GGUFError(f"tokenizer.ggml.{key} is {index}, outside the {len(tokens)} tokens")
        special[name] = tokens[index]
    return special


def tokenizer_config(meta: dict[str, Any], model_max_length: int) -> dict[str, Any]:
    """tokenizer_config.json: the special tokens, the chat template, and the
    flags transformers' tokenizer reads."""
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_tokens(meta),
        "add_bos_token": _flag(meta, "add_bos_token"),
        "add_eos_token": _flag(meta, "add_eos_token"),
        "clean_up_tokenization_spaces": _pre(meta)[3],
        "model_max_length": model_max_length,
    }
    if "tokenizer.chat_template" in meta:
        config["chat_template"] = meta["tokenizer.chat_template"]
    return config
