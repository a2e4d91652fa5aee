"""GGUF files (llama.cpp's format) in, Hugging Face folders out.

A GGUF holds a model's tensors, most of them quantised, and its metadata: the
shape of the model and its tokenizer. We read it with the `gguf` package,
dequantise with gguf's own kernels, undo llama.cpp's changes to the layout and
write the folder every other part of the project reads (config.json,
safetensors, tokenizer.json, tokenizer_config.json, generation_config.json):

    model = open_gguf("model.gguf")        # header, config and tensor list checked
    write_hf(model, "folder")              # tensors dequantised one at a time

Llama-style decoders only: general.architecture `llama` (Llama 3, SmolLM2) and
`qwen2`. Nothing here imports jax, so the conversion costs no accelerator start.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from codeio_jax.models.config import ModelConfig, RopeConfig, to_hf_config

ARCHITECTURES = ("llama", "qwen2")
QUANT_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")
DTYPES = ("float32", "float16", "bfloat16")

# GGUF tensor names (blk.N.<role>.<weight|bias>) -> Hugging Face module names in layer N.
_LAYER_ROLES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                 "output.weight": "lm_head.weight"}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)\Z")
# Llama 3.1's frequency scaling, which llama.cpp stores as this tensor of per-frequency factors
# rather than as metadata; it goes into config.json, not into the weights.
ROPE_FREQS = "rope_freqs.weight"


class GGUFError(ValueError):
    """A GGUF file this converter cannot turn into a Hugging Face folder."""


@dataclass(frozen=True)
class GGUFModel:
    """An opened GGUF whose header, config and tensor list have been checked."""

    path: Path
    reader: Any  # gguf.GGUFReader
    metadata: dict[str, Any]
    config: ModelConfig
    hf_names: dict[str, str]  # GGUF tensor name -> HF name, for every tensor that goes into the weights
    tokenizer: Any  # tokenizers.Tokenizer

    @property
    def architecture(self) -> str:
        return self.metadata["general.architecture"]

    @property
    def tensor_types(self) -> Counter:
        return Counter(t.tensor_type.name for t in self.reader.tensors)

    @property
    def parameter_count(self) -> int:
        return sum(int(t.n_elements) for t in self.reader.tensors if t.name in self.hf_names)


def open_gguf(path: str | Path, dtype: str = "float32") -> GGUFModel:
    """Read and check a GGUF: everything that can fail does so here, before a
    tensor is dequantised or a file written. dtype: the weights' dtype in the folder."""
    from codeio_jax.models import gguf_tokenizer

    if dtype not in DTYPES:
        raise GGUFError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    path = Path(path)
    reader = read_gguf(path)
    metadata = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    tensors = {t.name: t for t in reader.tensors}
    unsupported = sorted({t.tensor_type.name for t in reader.tensors} - set(QUANT_TYPES))
    if unsupported:
        example = next(t.name for t in reader.tensors if t.tensor_type.name == unsupported[0])
        raise GGUFError(f"{path}: tensor {example} is of type {unsupported[0]}, which this converter does not "
                        f"dequantise (it handles {', '.join(QUANT_TYPES)})")
    config = _model_config(path, metadata, tensors, dtype)
    hf_names = _hf_names(path, config, tensors)
    try:
        tokenizer = gguf_tokenizer.build_tokenizer(metadata, config.vocab_size)
    except GGUFError as exc:
        raise GGUFError(f"{path}: {exc}") from None
    return GGUFModel(path, reader, metadata, config, hf_names, tokenizer)


def write_hf(model: GGUFModel, out: str | Path, max_shard_bytes: int = 5 << 30,
             on_tensor: Callable[[str, str], None] | None = None) -> list[Path]:
    """Write the Hugging Face folder; returns the files written. on_tensor(name,
    type) is called after each tensor is written (progress)."""
    from codeio_jax.models import gguf_tokenizer

    out = Path(out)
    if (out / "config.json").exists() or any(out.glob("*.safetensors")):
        raise FileExistsError(f"{out} holds a model already; choose an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    written = _write_weights(model, out, max_shard_bytes, on_tensor)
    ids = {name: model.metadata[key] for name, key in (("bos_token_id", "tokenizer.ggml.bos_token_id"),
                                                       ("eos_token_id", "tokenizer.ggml.eos_token_id"),
                                                       ("pad_token_id", "tokenizer.ggml.padding_token_id"))
           if key in model.metadata}
    written.append(_write_json(out / "config.json", to_hf_config(model.config) | ids))
    written.append(_write_json(out / "generation_config.json", ids))
    model.tokenizer.save(str(out / "tokenizer.json"))
    written.append(out / "tokenizer.json")
    written.append(_write_json(out / "tokenizer_config.json",
                               gguf_tokenizer.tokenizer_config(model.metadata, model.config.max_position_embeddings)))
    return written


def _write_weights(model: GGUFModel, out: Path, max_shard_bytes: int,
                   on_tensor: Callable[[str, str], None] | None) -> list[Path]:
    """model.safetensors, or shards of at most max_shard_bytes with their index;
    one shard's tensors in memory at a time."""
    from safetensors.numpy import save_file

    itemsize = np.dtype(_numpy_dtype(model.config.param_dtype)).itemsize
    shards = _plan_shards([(t, t.n_elements * itemsize) for t in model.reader.tensors if t.name in model.hf_names],
                          max_shard_bytes)
    names = ["model.safetensors"] if len(shards) == 1 else \
        [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    written, weight_map = [], {}
    for shard, name in zip(shards, names):
        arrays = {}
        for tensor in shard:
            arrays[model.hf_names[tensor.name]] = _hf_tensor(model, tensor)
            if on_tensor is not None:
                on_tensor(tensor.name, tensor.tensor_type.name)
        save_file(arrays, str(out / name), metadata={"format": "pt"})
        written.append(out / name)
        weight_map.update(dict.fromkeys(arrays, name))
    if len(shards) > 1:
        total = sum(t.n_elements * itemsize for shard in shards for t in shard)
        written.append(_write_json(out / "model.safetensors.index.json",
                                   {"metadata": {"total_size": total}, "weight_map": weight_map}))
    return written


def read_gguf(path: str | Path):
    """gguf's GGUFReader over the file, with errors that say what is wrong with it."""
    from gguf import GGUFReader

    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise GGUFError(f"{path} does not exist") from None
    if magic != b"GGUF":
        raise GGUFError(f"{path} is not a GGUF file: it starts with {magic!r}, not b'GGUF'")

    class Reader(GGUFReader):
        # gguf maps every tensor's bytes as it opens the file, and a file cut short fails
        # there with a bare numpy reshape error; check the extent of the data first.
        def _build_tensors(self, start_offs, fields):
            from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

            end = start_offs
            for field in fields:
                # A tensor's info: name length, name, dims count, dims, type, offset (gguf 0.19's layout).
                name, dims, raw_type, offset = (bytes(field.parts[1]).decode(), field.parts[3],
                                                int(field.parts[4][0]), int(field.parts[5][0]))
                try:
                    block, size_of_block = GGML_QUANT_SIZES[GGMLQuantizationType(raw_type)]
                except ValueError:
                    raise GGUFError(f"{path}: tensor {name} has ggml type number {raw_type}, which the gguf "
                                    "package does not know") from None
                end = max(end, start_offs + offset + math.prod(int(d) for d in dims) // block * size_of_block)
            if end > size:
                raise GGUFError(f"{path} is truncated: it holds {size:,} bytes and its tensors end at byte "
                                f"{end:,} (a download or copy cut short?)")
            super()._build_tensors(start_offs, fields)

    try:
        return Reader(path)
    except GGUFError:
        raise
    except (ValueError, IndexError, KeyError, OverflowError, UnicodeDecodeError) as exc:
        raise GGUFError(f"{path} is truncated or corrupt in its header ({size:,} bytes; gguf's reader: "
                        f"{exc})") from None


def _model_config(path: Path, meta: dict[str, Any], tensors: dict[str, Any], dtype: str) -> ModelConfig:
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise GGUFError(f"{path}: general.architecture is {arch!r}; this converter handles "
                        f"{', '.join(ARCHITECTURES)} (llama-style decoders)")

    def key(name: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{name}", default)
        if value is None:
            raise GGUFError(f"{path}: the metadata has no {arch}.{name}")
        return value

    if key("expert_count", 0):
        raise GGUFError(f"{path}: {arch}.expert_count is {key('expert_count')}: mixture-of-experts {arch} "
                        "files are not supported")
    heads, hidden = key("attention.head_count"), key("embedding_length")
    kv_heads = key("attention.head_count_kv", heads)
    if isinstance(kv_heads, list):
        raise GGUFError(f"{path}: {arch}.attention.head_count_kv differs by layer, which a {arch} model cannot")
    head_dim = key("attention.key_length", hidden // heads)
    if key("rope.dimension_count", head_dim) != head_dim:
        raise GGUFError(f"{path}: rope turns {key('rope.dimension_count')} of {head_dim} dimensions per head; "
                        "partial rotary embeddings are not supported")
    if "token_embd.weight" not in tensors:
        raise GGUFError(f"{path} has no token_embd.weight tensor")
    vocab = int(tensors["token_embd.weight"].shape[1])
    if key("vocab_size", vocab) != vocab:
        raise GGUFError(f"{path}: {arch}.vocab_size is {key('vocab_size')} but token_embd.weight has {vocab} rows")
    theta = _float32_as_written(key("rope.freq_base", 10000.0))
    return ModelConfig(
        family=arch, vocab_size=vocab, hidden_size=hidden, intermediate_size=key("feed_forward_length"),
        num_layers=key("block_count"), num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
        rope=_rope(path, meta, arch, tensors, theta, head_dim),
        norm_eps=_float32_as_written(key("attention.layer_norm_rms_epsilon")),
        # llama.cpp writes an output projection only when it is not the embedding matrix.
        tie_embeddings="output.weight" not in tensors,
        qkv_bias=arch == "qwen2" or "blk.0.attn_q.bias" in tensors,
        max_position_embeddings=key("context_length"), param_dtype=dtype)


def _float32_as_written(value: float) -> float:
    """GGUF stores floats as float32: 1e-5 comes back as 9.99999974e-06. The
    shortest decimal that rounds to the same float32 is what the model's own
    config said."""
    return float(str(np.float32(value)))


def _rope(path: Path, meta: dict[str, Any], arch: str, tensors: dict[str, Any], theta: float,
          head_dim: int) -> RopeConfig:
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling != "none":
        raise GGUFError(f"{path}: {arch}.rope.scaling.type is {scaling!r}; only unscaled rope and Llama 3.1's "
                        f"scaling ({ROPE_FREQS}) are supported")
    if ROPE_FREQS not in tensors:
        return RopeConfig(theta=theta)
    factors = dequantised(tensors[ROPE_FREQS]).reshape(-1)
    # llama.cpp keeps only the factors; Meta's Llama 3.x configs all use these three
    # values with the factor (8 or 32), so take them and check the factors follow.
    fit = RopeConfig(theta=theta, kind="llama3", factor=float(factors.max()), low_freq_factor=1.0,
                     high_freq_factor=4.0, original_max_position_embeddings=8192)
    expected = llama3_rope_factors(fit, head_dim)
    if expected.shape != factors.shape or not np.allclose(factors, expected, rtol=1e-4):
        raise GGUFError(f"{path}: {ROPE_FREQS} is not Llama 3's rope scaling with factor {fit.factor:g}, "
                        "low_freq_factor 1, high_freq_factor 4 and original context 8192")
    return fit


def llama3_rope_factors(rope: RopeConfig, head_dim: int) -> np.ndarray:
    """What llama.cpp divides each rope frequency by under Llama 3.1's scaling
    (the contents of rope_freqs.weight): 1 for short wavelengths, `factor` for
    long ones, a smooth blend between."""
    frequencies = rope.theta ** -(np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelength = 2 * np.pi / frequencies
    context = rope.original_max_position_embeddings
    smooth = (context / wavelength - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
    blended = 1 / ((1 - smooth) / rope.factor + smooth)
    return np.where(wavelength < context / rope.high_freq_factor, 1.0,
                    np.where(wavelength > context / rope.low_freq_factor, rope.factor, blended)).astype(np.float32)


def _hf_names(path: Path, config: ModelConfig, tensors: dict[str, Any]) -> dict[str, str]:
    """GGUF name -> HF name for every weight, checked against the config: no
    tensor without a place, none missing, each of the shape the config implies."""
    names = {}
    for name in tensors:
        if name == ROPE_FREQS:
            continue
        match = _LAYER_TENSOR.match(name)
        if name in _GLOBAL_NAMES:
            names[name] = _GLOBAL_NAMES[name]
        elif match and match[2] in _LAYER_ROLES and int(match[1]) < config.num_layers:
            names[name] = f"model.layers.{match[1]}.{_LAYER_ROLES[match[2]]}.{match[3]}"
        else:
            raise GGUFError(f"{path}: tensor {name} has no place in a {config.num_layers}-layer {config.family} "
                            "model")
    expected = _hf_shapes(config)
    missing = sorted(set(expected) - set(names.values()))
    if missing:
        raise GGUFError(f"{path}: tensors missing for {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    for name, hf in names.items():
        shape = tuple(int(d) for d in reversed(tensors[name].shape.tolist()))  # GGUF lists the fastest dim first
        if hf not in expected:
            raise GGUFError(f"{path}: tensor {name} ({hf}) has no place in this {config.family} model")
        if shape != expected[hf]:
            raise GGUFError(f"{path}: tensor {name} has shape {shape}; the metadata implies {expected[hf]}")
    return names


def _hf_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    d, q, kv = config.hidden_size, config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    shapes = {"model.embed_tokens.weight": (config.vocab_size, d), "model.norm.weight": (d,)}
    if not config.tie_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, d)
    for i in range(config.num_layers):
        layer = f"model.layers.{i}."
        shapes |= {layer + "input_layernorm.weight": (d,), layer + "post_attention_layernorm.weight": (d,),
                   layer + "self_attn.q_proj.weight": (q, d), layer + "self_attn.k_proj.weight": (kv, d),
                   layer + "self_attn.v_proj.weight": (kv, d), layer + "self_attn.o_proj.weight": (d, q),
                   layer + "mlp.gate_proj.weight": (config.intermediate_size, d),
                   layer + "mlp.up_proj.weight": (config.intermediate_size, d),
                   layer + "mlp.down_proj.weight": (d, config.intermediate_size)}
        if config.qkv_bias:
            shapes |= {layer + "self_attn.q_proj.bias": (q,), layer + "self_attn.k_proj.bias": (kv,),
                       layer + "self_attn.v_proj.bias": (kv,)}
    return shapes


def dequantised(tensor) -> np.ndarray:
    """A tensor of a GGUF (gguf's ReaderTensor) as float32 in its row-major
    shape (GGUF lists dims fastest first), by gguf's own dequantisation."""
    from gguf.quants import dequantize

    if tensor.tensor_type.name not in QUANT_TYPES:
        raise GGUFError(f"tensor {tensor.name} is of type {tensor.tensor_type.name}, which this converter does "
                        f"not dequantise (it handles {', '.join(QUANT_TYPES)})")
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    return np.asarray(dequantize(tensor.data, tensor.tensor_type), np.float32).reshape(shape)


def _hf_tensor(model: GGUFModel, tensor) -> np.ndarray:
    array = dequantised(tensor)
    config = model.config
    if model.architecture == "llama" and re.search(r"\.attn_[qk]\.", tensor.name):
        heads = config.num_heads if ".attn_q." in tensor.name else config.num_kv_heads
        array = unpermute_rope_rows(array, heads)
    return np.ascontiguousarray(array.astype(_numpy_dtype(config.param_dtype), copy=False))


def unpermute_rope_rows(array: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter reorders the rows of a llama q or k projection (or
    bias) head by head so that rope rotates adjacent pairs (x0, x1), (x2, x3)...;
    Hugging Face's rotate_half pairs x_i with x_(i + head_dim/2). Row (pair i,
    half j) of a head in the GGUF is row (half j, pair i) in Hugging Face's."""
    rest = array.shape[1:]
    pairs = array.shape[0] // heads // 2
    return array.reshape(heads, pairs, 2, *rest).swapaxes(1, 2).reshape(array.shape)


def _numpy_dtype(name: str):
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)


def _plan_shards(sized: list[tuple[Any, int]], max_bytes: int) -> list[list[Any]]:
    shards: list[list[Any]] = [[]]
    used = 0
    for item, size in sized:
        if shards[-1] and used + size > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(item)
        used += size
    return shards


def _write_json(path: Path, value: dict) -> Path:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    return path

