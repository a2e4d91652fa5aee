"""Our own model checkpoints: the parameters as an Orbax checkpoint beside our
config (model_config.json), the form the trainer starts from. A training run's
folder (model_config.json + checkpoints/) reads the same way: the parameters of
its newest checkpoint; a run that trained LoRA adapters reads as its base with
the adapters merged in (the base named in its lora_base.json).

    save(folder, config, params) / load(folder) -> (config, params)
    load_config(folder) -> config;  load_adapters(run folder) -> (config with LoRA, adapters, base folder)

`codeio-jax convert` moves models between this form and Hugging Face folders.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from codeio_jax.models.config import LoraConfig, MLAConfig, ModelConfig, MoEConfig, RopeConfig

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


def config_to_dict(config: ModelConfig) -> dict:
    return dataclasses.asdict(config)


def config_from_dict(fields: dict) -> ModelConfig:
    fields = dict(fields)
    fields["rope"] = RopeConfig(**fields.get("rope", {}))
    if fields.get("mla") is not None:
        fields["mla"] = MLAConfig(**fields["mla"])
    if fields.get("moe") is not None:
        fields["moe"] = MoEConfig(**fields["moe"])
    if fields.get("lora") is not None:
        fields["lora"] = LoraConfig(**fields["lora"])
    return ModelConfig(**fields)


def save(folder: str | Path, config: ModelConfig, params: dict) -> Path:
    import orbax.checkpoint as ocp

    folder = Path(folder).absolute()
    if (folder / PARAMS_DIR).exists():
        raise FileExistsError(f"{folder / PARAMS_DIR} exists; choose an empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(folder / PARAMS_DIR, params)
    checkpointer.wait_until_finished()
    (folder / CONFIG_FILE).write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
    return folder


def load(folder: str | Path, target=None) -> tuple[ModelConfig, dict]:
    """(config, params); with `target` (a tree of jax.ShapeDtypeStruct with
    shardings) each array is read straight into its place on the mesh."""
    import orbax.checkpoint as ocp

    folder = Path(folder).absolute()
    config, runs = _read_config(folder)
    if (folder / PARAMS_DIR).exists():
        return config, ocp.StandardCheckpointer().restore(folder / PARAMS_DIR, target)
    if config.lora is not None:
        from codeio_jax.models.lora import merge

        _, adapters, base = load_adapters(folder)
        base_config, params = load(base, target)
        return base_config.replace(lora=None), merge(config, params, adapters)
    return config, _newest_params(folder, runs, target)


def load_config(folder: str | Path) -> ModelConfig:
    """The config of the model `load(folder)` gives (a LoRA run's: its base's, adapters merged)."""
    config, _ = _read_config(Path(folder).absolute())
    return config.replace(lora=None)


def load_adapters(folder: str | Path) -> tuple[ModelConfig, dict, Path]:
    """(config with its LoRA settings, the adapters of the newest checkpoint, the
    base model folder) of a training run that trained adapters."""
    from codeio_jax.models.lora import BASE_REFERENCE

    folder = Path(folder).absolute()
    config, runs = _read_config(folder)
    if config.lora is None or not runs:
        raise ValueError(f"{folder} is not a training run with LoRA adapters (train.lora was not set)")
    if not (folder / BASE_REFERENCE).exists():
        raise FileNotFoundError(f"{folder} trained adapters but lacks {BASE_REFERENCE}, which names their base")
    base = Path(json.loads((folder / BASE_REFERENCE).read_text())["init_from"])
    return config, _newest_params(folder, runs, None), base


def _read_config(folder: Path) -> tuple[ModelConfig, list[int]]:
    runs = sorted((int(p.name) for p in (folder / "checkpoints").glob("*") if p.name.isdigit()),
                  reverse=True) if (folder / "checkpoints").is_dir() else []
    if not (folder / CONFIG_FILE).exists() or not ((folder / PARAMS_DIR).exists() or runs):
        raise FileNotFoundError(f"{folder} is not a codeio-jax model checkpoint ({CONFIG_FILE} and "
                                f"{PARAMS_DIR}/ expected) nor a training run's folder (checkpoints/)")
    return config_from_dict(json.loads((folder / CONFIG_FILE).read_text())), runs


def _newest_params(folder: Path, runs: list[int], target) -> dict:
    """A training run's parameters from its newest checkpoint (the optimizer state stays behind)."""
    import orbax.checkpoint as ocp

    state = ocp.StandardCheckpointer().restore(folder / "checkpoints" / str(runs[0]) / "state")
    params = state["params"] if isinstance(state, dict) else state.params
    if target is not None:
        import jax

        params = jax.tree_util.tree_map(lambda value, want: jax.device_put(value, want.sharding), params, target)
    return params
