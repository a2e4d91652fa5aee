"""Hugging Face checkpoints in and out: config.json + safetensors (one file, or
shards with model.safetensors.index.json).

Import streams tensor by tensor: each is read, laid out our way and handed to
the device before the next is read, so the model never sits in memory twice
(benchmarks/checkpoint_memory.py measures the peak). Export writes what
transformers' `from_pretrained` loads.

    load_hf(folder) -> (config, params);  forward_fn(folder) -> tokens -> logits
    save_hf(folder, config, params)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from codeio_jax.models.config import ModelConfig, from_hf_config, to_hf_config

INDEX = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be read as the model it claims to be."""


# (HF name pattern, our path template, layout) per tensor. Layouts say how an
# HF tensor (torch Linear: [out, in]) becomes ours (flax: [in, *out]).
_COMMON = [
    (r"model\.embed_tokens\.weight", "embed_tokens/embedding", "copy"),
    (r"model\.norm\.weight", "norm/weight", "copy"),
    (r"lm_head\.weight", "lm_head/kernel", "transpose"),
    (r"model\.layers\.(\d+)\.self_attn\.q_proj\.weight", "layers_{0}/self_attn/q_proj/kernel", "in_heads"),
    (r"model\.layers\.(\d+)\.self_attn\.k_proj\.weight", "layers_{0}/self_attn/k_proj/kernel", "in_kv_heads"),
    (r"model\.layers\.(\d+)\.self_attn\.v_proj\.weight", "layers_{0}/self_attn/v_proj/kernel", "in_kv_heads"),
    (r"model\.layers\.(\d+)\.self_attn\.q_proj\.bias", "layers_{0}/self_attn/q_proj/bias", "bias_heads"),
    (r"model\.layers\.(\d+)\.self_attn\.k_proj\.bias", "layers_{0}/self_attn/k_proj/bias", "bias_kv_heads"),
    (r"model\.layers\.(\d+)\.self_attn\.v_proj\.bias", "layers_{0}/self_attn/v_proj/bias", "bias_kv_heads"),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj\.weight", "layers_{0}/self_attn/o_proj/kernel", "heads_out"),
    (r"model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight", "layers_{0}/mlp/{1}_proj/kernel", "transpose"),
    (r"model\.layers\.(\d+)\.(input_layernorm|post_attention_layernorm|pre_feedforward_layernorm|"
     r"post_feedforward_layernorm)\.weight", "layers_{0}/{1}/weight", "copy"),
]


# Layouts starting with this take one HF tensor per expert (the pattern's last
# group is the expert index) to one of our arrays stacked over experts on axis 0;
# the rest of the name is the layout of each slice.
PER_EXPERT = "per_expert_"


def _rules(config: ModelConfig) -> list[tuple[re.Pattern, str, str]]:
    rules = list(_COMMON)
    if config.family == "deepseek_v2":
        from codeio_jax.models.deepseek import HF_RULES

        rules = [r for r in rules if "self_attn" not in r[1] and "/mlp/" not in r[1]] + HF_RULES
    return [(re.compile(pattern + r"\Z"), path, layout) for pattern, path, layout in rules]


def to_ours(tensor: np.ndarray, layout: str, config: ModelConfig) -> np.ndarray:
    d = config.head_dim
    if layout == "copy":
        return tensor
    if layout == "transpose":
        return tensor.T
    if layout in ("in_heads", "in_kv_heads"):
        heads = config.num_heads if layout == "in_heads" else config.num_kv_heads
        return tensor.T.reshape(tensor.shape[1], heads, d)
    if layout in ("bias_heads", "bias_kv_heads"):
        heads = config.num_heads if layout == "bias_heads" else config.num_kv_heads
        return tensor.reshape(heads, d)
    if layout == "in_heads_any":  # [heads * any, in] -> [in, heads, any] (DeepSeek's kv_b_proj)
        return tensor.T.reshape(tensor.shape[1], config.num_heads, -1)
    if layout == "heads_out":
        return tensor.T.reshape(config.num_heads, -1, tensor.shape[0])
    if layout == "experts_transpose":  # [experts, out, in] -> [experts, in, out]
        return np.swapaxes(tensor, 1, 2)
    raise CheckpointError(f"unknown layout {layout!r}")


def to_hf(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == "copy":
        return array
    if layout == "transpose":
        return array.T
    if layout in ("in_heads", "in_kv_heads", "in_heads_any"):
        return array.reshape(array.shape[0], -1).T
    if layout in ("bias_heads", "bias_kv_heads"):
        return array.reshape(-1)
    if layout == "heads_out":
        return array.reshape(-1, array.shape[-1]).T
    if layout == "experts_transpose":
        return np.swapaxes(array, 1, 2)
    raise CheckpointError(f"unknown layout {layout!r}")


def read_config(folder: str | Path, **overrides) -> ModelConfig:
    path = Path(folder) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{folder} has no config.json")
    try:
        return from_hf_config(json.loads(path.read_text()), **overrides)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def _tensor_files(folder: Path) -> list[Path]:
    index = folder / INDEX
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted({folder / name for name in weight_map.values()})
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder} has no .safetensors files")
    missing = [f for f in files if not f.exists()]
    if missing:
        raise CheckpointError(f"{folder}: the index names shards that are missing: {[f.name for f in missing]}")
    return files


_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _dtype(code: str):
    if code == "BF16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    if code not in _DTYPES:
        raise CheckpointError(f"safetensors dtype {code} is not supported")
    return _DTYPES[code]


def iter_hf_tensors(folder: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) of every tensor, one at a time, read with plain reads
    rather than a memory map: a mapped file stays resident as it is read and
    would count a second copy of the model by the end."""
    for path in _tensor_files(Path(folder)):
        with open(path, "rb") as f:
            header_size = int.from_bytes(f.read(8), "little")
            try:
                header = json.loads(f.read(header_size))
            except ValueError:
                raise CheckpointError(f"{path} is not a safetensors file") from None
            base = 8 + header_size
            entries = sorted(((name, info) for name, info in header.items() if name != "__metadata__"),
                             key=lambda item: item[1]["data_offsets"][0])
            for name, info in entries:
                begin, end = info["data_offsets"]
                array = np.empty(info["shape"], _dtype(info["dtype"]))
                if array.nbytes != end - begin:
                    raise CheckpointError(f"{path}: tensor {name} has {end - begin} bytes for shape "
                                          f"{info['shape']} of {info['dtype']}")
                f.seek(base + begin)
                if f.readinto(memoryview(array.reshape(-1).view(np.uint8))) != array.nbytes:
                    raise CheckpointError(f"{path} is truncated (tensor {name})")
                yield name, array


def load_hf(folder: str | Path, dtype: Any = None, **overrides) -> tuple[ModelConfig, dict]:
    """Our config and parameters (a nested dict of jax arrays) from an HF folder.
    dtype: the parameters' dtype (default: the config's param_dtype)."""
    config = read_config(folder, **overrides)
    dtype = jnp.dtype(dtype or config.param_dtype)
    rules = _rules(config)
    params: dict = {}
    seen = set()
    experts: dict[str, dict[int, np.ndarray]] = {}  # per-expert slices until a stack is complete
    for name, tensor in iter_hf_tensors(folder):
        if name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed from the config
        for pattern, template, layout in rules:
            match = pattern.match(name)
            if match:
                path = template.format(*match.groups())
                if layout.startswith(PER_EXPERT):
                    index, count = int(match.groups()[-1]), _num_experts(config)
                    if index >= count:
                        raise CheckpointError(f"{folder}: tensor {name!r} is expert {index}; the config has {count}")
                    slices = experts.setdefault(path, {})
                    slices[index] = to_ours(tensor, layout[len(PER_EXPERT):], config)
                    if len(slices) < count:
                        break
                    array = np.stack([slices[i] for i in range(count)])
                    del experts[path], slices
                else:
                    array = to_ours(tensor, layout, config)
                array = np.ascontiguousarray(array).astype(dtype, copy=False)
                _put(params, path, jax.device_put(array))
                del array
                seen.add(path)
                break
        else:
            raise CheckpointError(f"{folder}: tensor {name!r} matches nothing in the {config.family} layout")
        del tensor
    if experts:
        path, slices = next(iter(experts.items()))
        raise CheckpointError(f"{folder}: {path} has {len(slices)} of {_num_experts(config)} experts")
    if config.tie_embeddings:
        params.pop("lm_head", None)
    _check_complete(config, params, folder)
    return config, params


def _num_experts(config: ModelConfig) -> int:
    return config.moe.num_experts if config.moe is not None else 0


def _put(tree: dict, path: str, value) -> None:
    *parents, leaf = path.split("/")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def _check_complete(config: ModelConfig, params: dict, folder) -> None:
    from codeio_jax.models.decoder import init_params

    expected = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    expected = jax.tree_util.tree_map(lambda x: x.value.shape if hasattr(x, "value") else x.shape, expected,
                                      is_leaf=lambda x: hasattr(x, "value"))
    want = {"/".join(k.key for k in path): shape for path, shape in
            jax.tree_util.tree_flatten_with_path(expected, is_leaf=lambda x: isinstance(x, tuple))[0]}
    got = {"/".join(k.key for k in path): leaf.shape for path, leaf in
           jax.tree_util.tree_flatten_with_path(params)[0]}
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    if unexpected:
        raise CheckpointError(f"{folder}: tensors the config has no place for (does num_hidden_layers match?): "
                              f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    if missing:
        raise CheckpointError(f"{folder}: missing tensors for {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    wrong = [(k, got[k], want[k]) for k in want if tuple(got[k]) != tuple(want[k])]
    if wrong:
        raise CheckpointError(f"{folder}: tensors of the wrong shape (ours, expected): {wrong[:3]}")


def save_hf(folder: str | Path, config: ModelConfig, params: dict, dtype: Any = None,
            max_shard_bytes: int = 5 << 30) -> list[Path]:
    """Write config.json and safetensors shards (with the index when more than
    one) that transformers loads as the same model."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(to_hf_config(config), indent=2) + "\n")
    tensors = list(_hf_tensors(config, params, dtype))
    shards: list[list[tuple[str, np.ndarray]]] = [[]]
    size = 0
    for name, array in tensors:
        if shards[-1] and size + array.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, array))
        size += array.nbytes
    written, weight_map = [], {}
    for i, shard in enumerate(shards):
        name = "model.safetensors" if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: np.ascontiguousarray(a) for n, a in shard}, str(folder / name), metadata={"format": "pt"})
        written.append(folder / name)
        weight_map.update({n: name for n, _ in shard})
    if len(shards) > 1:
        total = sum(a.nbytes for _, a in tensors)
        (folder / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                               indent=2) + "\n")
    return written


def _hf_tensors(config: ModelConfig, params: dict, dtype) -> Iterator[tuple[str, np.ndarray]]:
    flat = {"/".join(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    names = _hf_names(config)
    for path, leaf in flat.items():
        if path not in names:
            raise CheckpointError(f"parameter {path} has no Hugging Face name for {config.family}")
        name, layout = names[path]
        array = np.asarray(jax.device_get(leaf))
        if dtype is not None:
            array = array.astype(jnp.dtype(dtype))
        if layout.startswith(PER_EXPERT):
            for expert_name, expert in zip(name, array, strict=True):
                yield expert_name, to_hf(expert, layout[len(PER_EXPERT):])
        else:
            yield name, to_hf(array, layout)


def _hf_names(config: ModelConfig) -> dict[str, tuple[Any, str]]:
    """Our path -> (HF name, layout), by instantiating every rule for every
    layer; per-expert layouts get the list of HF names in expert order."""
    names: dict[str, tuple[Any, str]] = {}
    for pattern, template, layout in _rules(config):
        source = pattern.pattern[:-2]  # drop the \Z
        groups = re.compile(source).groups
        for combo in _group_values(source, groups, config, layout):
            hf = _fill(source, combo)
            if layout.startswith(PER_EXPERT):  # the expert index varies fastest: appended in order
                names.setdefault(template.format(*combo), ([], layout))[0].append(hf)
            else:
                names[template.format(*combo)] = (hf, layout)
    return names


def _group_values(source: str, groups: int, config: ModelConfig, layout: str):
    if groups == 0:
        yield ()
        return
    options = []
    for alternatives in re.findall(r"\(([^()]*)\)", source):
        if alternatives == r"\d+":
            options.append([str(i) for i in range(config.num_layers)])
        else:
            options.append(alternatives.split("|"))
    if layout.startswith(PER_EXPERT):
        options[-1] = [str(i) for i in range(_num_experts(config))]
    import itertools

    yield from itertools.product(*options)


def _fill(source: str, values) -> str:
    values = iter(values)
    text = re.sub(r"\(([^()]*)\)", lambda _: next(values), source)
    return text.replace("\\.", ".")


def forward_fn(folder: str | Path, dtype: Any = None) -> Callable[[Any], jax.Array]:
    """A function from a token batch [batch, length] (int) to logits
    [batch, length, vocab], for the model in a Hugging Face folder."""
    from codeio_jax.models.decoder import Decoder

    config, params = load_hf(folder, dtype)
    if dtype is not None:
        config = config.replace(dtype=jnp.dtype(dtype).name)
    model = Decoder(config)
    apply = jax.jit(lambda p, tokens: model.apply({"params": p}, tokens)[0])
    return lambda tokens: apply(params, jnp.asarray(tokens, jnp.int32))
