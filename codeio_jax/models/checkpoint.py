"""Our own model checkpoints: the parameters as an Orbax checkpoint beside our
config (model_config.json), the form the trainer starts from. A training run's
folder (model_config.json + checkpoints/) reads the same way: the parameters of
its newest checkpoint.

    save(folder, config, params) / load(folder) -> (config, params)

`codeio-jax convert` moves models between this form and Hugging Face folders.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from codeio_jax.models.config import MLAConfig, ModelConfig, MoEConfig, RopeConfig

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
    runs = sorted((int(p.name) for p in (folder / "checkpoints").glob("*") if p.name.isdigit()),
                  reverse=True) if (folder / "checkpoints").is_dir() else []
    if not (folder / CONFIG_FILE).exists() or not ((folder / PARAMS_DIR).exists() or runs):
        raise FileNotFoundError(f"{folder} is not a codeio-jax model checkpoint ({CONFIG_FILE} and "
                                f"{PARAMS_DIR}/ expected) nor a training run's folder (checkpoints/)")
    config = config_from_dict(json.loads((folder / CONFIG_FILE).read_text()))
    if (folder / PARAMS_DIR).exists():
        return config, ocp.StandardCheckpointer().restore(folder / PARAMS_DIR, target)
    # A training run: the parameters of its newest checkpoint (the optimizer state stays behind).
    state = ocp.StandardCheckpointer().restore(folder / "checkpoints" / str(runs[0]) / "state")
    params = state["params"] if isinstance(state, dict) else state.params
    if target is not None:
        import jax

        params = jax.tree_util.tree_map(lambda value, want: jax.device_put(value, want.sharding), params, target)
    return config, params
