"""LoRA: low-rank adapters trained over a frozen base, laid out as PEFT lays them out.

The adapters are a variable collection of their own ("lora", beside "params"):
every `layers.Projection` whose name the config's `LoraConfig.targets` names
adds scale * dropout(x) A B to x W, with A [*in, rank] and B [rank, *out]
sharded by the kernel's own logical axes (A along the kernel's input axes, B
along its output axes), so the rules that place the base place the adapters.
B starts at zero: a fresh adapter leaves the model as it was.

    init_adapters(config, rng) -> adapters             (boxed with logical axes)
    merge(config, params, adapters) -> params          (W + scale * A B: a plain model)
    save_peft(folder, config, adapters, base) / load_peft(folder, config) -> adapters

The PEFT folder (adapter_config.json, adapter_model.safetensors) is what
`peft.PeftModel.from_pretrained(transformers_model, folder)` loads. Routed MoE
experts and the embeddings take no adapters (PEFT's "all-linear" skips the
output layer too).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from codeio_jax.models.config import LoraConfig, ModelConfig

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Where a training run with LoRA records the base it adapts (models/checkpoint.py reads it).
BASE_REFERENCE = "lora_base.json"


class AdapterError(ValueError):
    """Adapters that do not fit the model they are put on."""


def _flat(tree: dict) -> dict[str, Any]:
    import flax.linen as nn

    tree = nn.meta.unbox(tree)
    return {"/".join(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _unflat(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for path, leaf in flat.items():
        *parents, name = path.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = leaf
    return tree


def _init(config: ModelConfig, rng: jax.Array) -> dict:
    from codeio_jax.models.decoder import Decoder
    from codeio_jax.models.layers import LORA_COLLECTION

    variables = Decoder(config).init(rng, jnp.zeros((1, 1), jnp.int32))
    return variables.get(LORA_COLLECTION, {})


def adaptable_projections(config: ModelConfig) -> list[str]:
    """The projection names of this architecture that can carry adapters."""
    every = config.replace(lora=LoraConfig(targets=("all-linear",)))
    shapes = jax.eval_shape(lambda: _init(every, jax.random.PRNGKey(0)))
    return sorted({path.split("/")[-2] for path in _flat(shapes)})


def check_targets(config: ModelConfig) -> None:
    """A target that names no projection of the model is an error naming those that exist."""
    if config.lora is None or "all-linear" in config.lora.targets:
        return
    existing = adaptable_projections(config)
    unknown = [target for target in config.lora.targets if target not in existing]
    if unknown:
        raise AdapterError(f"LoRA target{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} match"
                           f"{'' if len(unknown) > 1 else 'es'} no projection of this {config.family} model; "
                           f"its projections are {', '.join(existing)} (or 'all-linear' for all of them)")


def init_adapters(config: ModelConfig, rng: jax.Array) -> dict:
    """Fresh adapters (A random, B zero), boxed with their logical axis names. Under
    jit the base parameters the initialisation also draws are dead code and vanish."""
    if config.lora is None:
        raise AdapterError("the model config has no LoRA settings (ModelConfig.lora)")
    check_targets(config)
    return _init(config, rng)


def merge(config: ModelConfig, params: dict, adapters: dict) -> dict:
    """The base with each adapted kernel replaced by W + scale * A B (in float32,
    stored in the kernel's dtype): the plain model the adapted one computes."""
    if config.lora is None:
        raise AdapterError("merging needs the LoRA settings the adapters were trained with (ModelConfig.lora)")
    flat_params = _flat(params)
    merged = dict(flat_params)
    for module, pair in _modules(adapters).items():
        kernel_path = f"{module}/kernel"
        if kernel_path not in flat_params:
            raise AdapterError(f"the adapters hold {module}, which the base does not have")
        kernel = flat_params[kernel_path]
        a, b = jnp.asarray(pair["lora_a"], jnp.float32), jnp.asarray(pair["lora_b"], jnp.float32)
        delta = jnp.tensordot(a, b, axes=1) * config.lora.scale
        if delta.shape != kernel.shape:
            raise AdapterError(f"the adapter of {module} makes a {delta.shape} update for a {kernel.shape} kernel: "
                               "it was made for a base of another shape")
        merged[kernel_path] = (kernel.astype(jnp.float32) + delta).astype(kernel.dtype)
    return _unflat(merged)


def _modules(adapters: dict) -> dict[str, dict[str, Any]]:
    modules: dict[str, dict[str, Any]] = {}
    for path, leaf in _flat(adapters).items():
        module, name = path.rsplit("/", 1)
        modules.setdefault(module, {})[name] = leaf
    return modules


def _hf_modules(config: ModelConfig) -> dict[str, tuple[str, str]]:
    """Our module path -> (HF module name, the kernel's layout), for every
    kernel whose HF tensor is a Linear's weight."""
    from codeio_jax.models.convert import _hf_names

    modules = {}
    for path, (name, layout) in _hf_names(config).items():
        if path.endswith("/kernel") and isinstance(name, str) and name.endswith(".weight"):
            modules[path[: -len("/kernel")]] = (name[: -len(".weight")], layout)
    return modules


def save_peft(folder: str | Path, config: ModelConfig, adapters: dict, base_model: str = "") -> Path:
    """Write adapter_config.json and adapter_model.safetensors (float32) that
    `peft` loads onto the transformers model of the base."""
    from safetensors.numpy import save_file

    lora = config.lora
    if lora is None:
        raise AdapterError("exporting adapters needs their LoRA settings (ModelConfig.lora)")
    names = _hf_modules(config)
    tensors = {}
    for module, pair in _modules(adapters).items():
        if module not in names:
            raise AdapterError(f"adapter {module} has no Hugging Face module name for {config.family}")
        hf, _ = names[module]
        a = np.asarray(jax.device_get(pair["lora_a"]), np.float32)
        b = np.asarray(jax.device_get(pair["lora_b"]), np.float32)
        # torch Linear layout: lora_A [rank, in], lora_B [out, rank]; our in and out axes
        # flatten in the order the base kernel's own conversion flattens them.
        tensors[f"base_model.model.{hf}.lora_A.weight"] = np.ascontiguousarray(a.reshape(-1, lora.rank).T)
        tensors[f"base_model.model.{hf}.lora_B.weight"] = np.ascontiguousarray(b.reshape(lora.rank, -1).T)
    targets = sorted({module.rsplit("/", 1)[-1] for module in _modules(adapters)})
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    adapter_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": lora.rank, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout, "target_modules": targets,
        "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
        "init_lora_weights": True, "inference_mode": True, "modules_to_save": None,
    }
    (folder / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=2) + "\n")
    return folder


def load_peft(folder: str | Path, config: ModelConfig) -> tuple[ModelConfig, dict]:
    """(config with the folder's LoRA settings, adapters) from a PEFT folder, for
    the base `config` describes; shapes are checked against that base."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    if not (folder / ADAPTER_CONFIG).exists() or not (folder / ADAPTER_WEIGHTS).exists():
        raise AdapterError(f"{folder} is not a PEFT adapter folder ({ADAPTER_CONFIG} and {ADAPTER_WEIGHTS} expected)")
    settings = json.loads((folder / ADAPTER_CONFIG).read_text())
    if settings.get("peft_type") != "LORA" or settings.get("use_dora") or settings.get("use_rslora"):
        raise AdapterError(f"{folder} holds a {settings.get('peft_type')} adapter with options we do not "
                           "implement; plain LoRA is supported")
    targets = settings.get("target_modules") or ()
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    lora = LoraConfig(targets=targets, rank=int(settings["r"]), alpha=float(settings["lora_alpha"]),
                      dropout=float(settings.get("lora_dropout", 0.0)))
    config = config.replace(lora=lora)
    expected = _flat(jax.eval_shape(lambda: _init(config, jax.random.PRNGKey(0))))
    tensors = load_file(str(folder / ADAPTER_WEIGHTS))
    by_hf = {hf: module for module, (hf, _) in _hf_modules(config).items()}
    flat: dict[str, np.ndarray] = {}
    for key, tensor in tensors.items():
        stem = key.removeprefix("base_model.model.")
        for part, ours in ((".lora_A.weight", "lora_a"), (".lora_B.weight", "lora_b")):
            if stem.endswith(part) and stem[: -len(part)] in by_hf:
                path = f"{by_hf[stem[: -len(part)]]}/{ours}"
                break
        else:
            raise AdapterError(f"{folder}: tensor {key} is not an adapter of a projection this "
                               f"{config.family} model has")
        if path not in expected:
            raise AdapterError(f"{folder}: {key} adapts a projection its target_modules leave out")
        want = expected[path].shape
        hf_shape = ((lora.rank, int(np.prod(want[:-1]))) if ours == "lora_a"
                    else (int(np.prod(want[1:])), lora.rank))
        if tuple(tensor.shape) != hf_shape:
            raise AdapterError(f"{folder}: {key} is {tuple(tensor.shape)}, while this base needs {hf_shape}: "
                               "the adapter was made for a base of another shape")
        flat[path] = tensor.T.reshape(want)
    missing = sorted(set(expected) - set(flat))
    if missing:
        raise AdapterError(f"{folder}: no tensors for {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    return config, _unflat({path: jnp.asarray(value) for path, value in flat.items()})
