"""The training loop, configured by gin (gin/train/*.gin).

    mesh -> sharded state (initialised or restored) -> for each step:
      batch (host numpy -> global arrays) -> jitted step -> metrics, checkpoints, evaluation

Every parameter and optimizer slot is placed by its logical axis names
(partitioning.py); the step is compiled once with those shardings (pjit).
A restarted run finds its newest checkpoint and continues from it: state,
RNG and input position included, so on CPU its losses equal an uninterrupted
run's bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from codeio_jax.models.config import LoraConfig, ModelConfig
from codeio_jax.models.decoder import Decoder, init_params
from codeio_jax.training import hardware, partitioning
from codeio_jax.training.checkpoints import Checkpoints
from codeio_jax.training.input import to_global
from codeio_jax.training.metrics import MetricsLog, peak_flops_per_device
from codeio_jax.training.optimizer import OptimizerConfig, make_optimizer
from codeio_jax.training.step import TrainState, flops_per_token, init_state, train_step


@dataclasses.dataclass
class StepSetup:
    """Everything the loop needs before its first batch: the model config as
    trained, the mesh and rules, the optimizer, the state's shapes and
    shardings, and the jitted step. `train` and `compile_only` both build it
    here, so a compiled-only step is the step a run would execute."""

    config: ModelConfig
    mesh: Any
    rules: Any
    optimizer: Any
    schedule: Any
    state_shapes: TrainState
    state_shardings: TrainState
    batch_sharding: Any
    step_fn: Any  # step_fn(state, batch, frozen): frozen is the LoRA base, None without LoRA
    frozen_shapes: Any = None
    frozen_shardings: Any = None

    def abstract_state(self) -> TrainState:
        """The state as jax.ShapeDtypeStructs placed on the mesh (restore and lower take it)."""
        return _abstract(self.state_shapes, self.state_shardings)

    def abstract_frozen(self) -> Any:
        """With LoRA, the frozen base as placed jax.ShapeDtypeStructs (None without)."""
        return None if self.frozen_shapes is None else _abstract(self.frozen_shapes, self.frozen_shardings)


def _abstract(shapes, shardings):
    return jax.tree_util.tree_map(
        lambda shape, sharding: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding), shapes, shardings)


def build_step(model: ModelConfig, mesh: partitioning.MeshConfig, optimizer: OptimizerConfig, steps: int,
               seed: int = 0, z_loss: float = 0.0, compute_dtype: str = "bfloat16", remat: str | None = None,
               attention_impl: str | None = None, moe_impl: str | None = None, loss_chunk_length: int = 512,
               devices: Any = None, scan_layers: bool | None = None, lora: LoraConfig | None = None) -> StepSetup:
    """The configured step over `devices` (default: every device of the job).
    remat, attention_impl, moe_impl and scan_layers override the model's own when given.
    lora: train adapters over the frozen model instead of the model itself."""
    overrides = {name: value for name, value in (("remat", remat), ("attention_impl", attention_impl),
                                                  ("moe_impl", moe_impl), ("scan_layers", scan_layers))
                 if value is not None}
    config = model.replace(dtype=compute_dtype, param_dtype="float32", lora=lora, **overrides)
    device_mesh = partitioning.make_mesh(mesh, devices)
    rules = mesh.rules
    tx, schedule = make_optimizer(optimizer, max(steps // optimizer.accumulation_steps, 1))
    boxed = jax.eval_shape(functools.partial(init_state, config, tx, seed, unbox=False))
    state_shardings = partitioning.shardings(nn.get_partition_spec(boxed), device_mesh, rules)
    shapes = jax.eval_shape(functools.partial(init_state, config, tx, seed))
    frozen_shapes = frozen_shardings = None
    if lora is not None:  # the base: placed by the same rules, outside the state
        base = config.replace(lora=None)
        boxed_base = jax.eval_shape(lambda: init_params(base, jax.random.PRNGKey(0)))
        frozen_shardings = partitioning.shardings(nn.get_partition_spec(boxed_base), device_mesh, rules)
        frozen_shapes = nn.meta.unbox(boxed_base)
    batch_sharding = partitioning.batch_sharding(device_mesh, rules)
    step_fn = jax.jit(functools.partial(train_step, model=Decoder(config), optimizer=tx, schedule=schedule,
                                        z_loss=z_loss, loss_chunk_length=loss_chunk_length),
                      in_shardings=(state_shardings, batch_sharding, frozen_shardings),
                      out_shardings=(state_shardings, partitioning.replicated(device_mesh)), donate_argnums=0)
    return StepSetup(config, device_mesh, rules, tx, schedule, shapes, state_shardings, batch_sharding, step_fn,
                     frozen_shapes, frozen_shardings)


@dataclasses.dataclass
class TrainReport:
    model_dir: Path
    start_step: int
    end_step: int
    last_metrics: dict
    config: ModelConfig


@gin.configurable
def train(model_dir: str | Path = gin.REQUIRED, model: ModelConfig | None = None, inputs: Any = gin.REQUIRED,
          steps: int = 1000, optimizer: OptimizerConfig = OptimizerConfig(),
          mesh: partitioning.MeshConfig = partitioning.MeshConfig(), seed: int = 0, z_loss: float = 0.0,
          compute_dtype: str = "bfloat16", remat: str | None = None, attention_impl: str | None = None,
          moe_impl: str | None = None, scan_layers: bool | None = None, loss_chunk_length: int = 512,
          log_every: int = 10,
          checkpoint_every: int = 500, keep_checkpoints: int = 3, async_checkpoints: bool = True,
          evaluate: Callable[[ModelConfig, Any, int], dict] | None = None, eval_every: int = 0,
          peak_flops: float | None = None, init_from: str | Path | None = None, lora: LoraConfig | None = None,
          on_log: Callable[[dict], None] | None = None) -> TrainReport:
    """Train `model` (default: init_from's architecture) on `inputs` (SeqioInput or
    SyntheticInput) for `steps` steps (micro-batches; with accumulation, steps / k
    optimizer updates), writing checkpoints, metrics.jsonl and TensorBoard events
    under `model_dir`.

    compute_dtype: activations and matmuls (float32 master weights either way).
    remat, attention_impl, moe_impl, scan_layers: override the model's (models/config.py lists the
      choices; scan_layers runs the layers as lax.scan, which a CPU host needs for remat to pay).
    loss_chunk_length: positions whose logits the loss computes at once (0: the whole
      sequence); the [batch, length, vocab] logits never exist whole otherwise.
    evaluate: called as evaluate(config, params, step) every `eval_every` steps
      and at the last one (e.g. @SeqioEvaluator()); its numbers are logged with the step's.
    peak_flops: per device, for MFU (default: looked up from the device kind).
    init_from: a codeio-jax model checkpoint (models/checkpoint.py) to start from
      instead of random weights (stage 2 from stage 1; a converted HF model); a
      run that has its own checkpoints resumes from those instead.
    lora: train low-rank adapters (models/lora.py) over the frozen init_from model
      instead of the model itself: the state, the optimizer and the checkpoints hold
      the adapters alone, and the run folder records its base (lora_base.json), so
      loading or converting the run gives the merged model.
    """
    if lora is not None and init_from is None:
        raise ValueError("LoRA adapts a pretrained model: set train.init_from to its checkpoint "
                         "(`codeio-jax convert hf-to-jax` makes one from a Hugging Face folder)")
    if model is None:
        if init_from is None:
            raise ValueError("train needs a model: bind train.model (e.g. include a gin/models/*.gin) or "
                             "train.init_from (a checkpoint whose architecture it takes)")
        from codeio_jax.models.checkpoint import load_config

        model = load_config(init_from)
    model_dir = Path(model_dir) if "://" not in str(model_dir) else model_dir
    setup = build_step(model, mesh, optimizer, steps, seed, z_loss, compute_dtype, remat, attention_impl, moe_impl,
                       loss_chunk_length, scan_layers=scan_layers, lora=lora)
    config = setup.config
    checkpoints = Checkpoints(model_dir, keep=keep_checkpoints, every=checkpoint_every,
                              async_save=async_checkpoints)
    with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
        frozen = frozen_base(setup, model_dir, init_from)
        if checkpoints.latest_step() is not None:
            state, position = checkpoints.restore(setup.abstract_state())
            inputs.skip_to(position)
        else:
            state = starting_state(setup, init_from, seed)
        start = int(state.step)
        record_run(model_dir, config, init_from)
        evaluated = evaluated_model(config)
        length = inputs.length
        log = MetricsLog(model_dir, flops_per_token(config, length),
                         peak_flops or peak_flops_per_device(), jax.device_count(), on_log=on_log)
        metrics: dict = {}
        clock = time.perf_counter()
        tokens_since = 0
        step_fn = None
        for step in range(start, steps):
            batch = to_global(next(inputs), setup.batch_sharding)
            if step_fn is None:  # compiled ahead so that the compiler's memory is freed before the step runs
                step_fn = setup.step_fn.lower(state, batch, frozen).compile()
                if jax.default_backend() == "cpu":
                    hardware.return_freed_memory_to_the_system()
            state, metrics = step_fn(state, batch, frozen)
            tokens_since += inputs.batch_size * length
            done = step + 1
            if done % log_every == 0 or done == steps:
                metrics = jax.device_get(metrics)
                elapsed = time.perf_counter() - clock
                due = evaluate is not None and ((eval_every and done % eval_every == 0) or done == steps)
                extra = evaluate(*evaluated(state.params, frozen), done) if due else {}
                log.write(done, metrics, tokens_since / elapsed, extra)
                clock, tokens_since = time.perf_counter(), 0
            checkpoints.save(done, state, inputs.position, force=done == steps)
        checkpoints.close()
        log.close()
    final = {key: float(value) for key, value in jax.device_get(metrics).items()} if metrics else {}
    return TrainReport(Path(str(model_dir)), start, max(start, steps), final, config)


def frozen_base(setup: StepSetup, model_dir, init_from) -> Any:
    """With LoRA, the base the adapters train over (read into its shardings; a run
    resumes over the base it started from, never another); None without."""
    if setup.config.lora is None:
        return None
    _check_base_reference(model_dir, init_from)
    return _read_model(init_from, setup.config, setup.frozen_shapes, setup.frozen_shardings)


def starting_state(setup: StepSetup, init_from, seed: int) -> TrainState:
    """The state of a run's step 0: init_from's parameters (with LoRA, fresh
    adapters over it) or a random initialisation, with a fresh optimizer."""
    if init_from is not None and setup.config.lora is None:
        params = _read_model(init_from, setup.config, setup.state_shapes.params, setup.state_shardings.params)
        return fresh_state(params, setup.optimizer, seed, setup.state_shardings)
    return jax.jit(functools.partial(init_state, setup.config, setup.optimizer, seed),
                   out_shardings=setup.state_shardings)()


def record_run(model_dir, config: ModelConfig, init_from) -> None:
    """config.json in the run's folder (and with LoRA lora_base.json, naming the
    base), so that loading or converting the run folder gives its model."""
    if jax.process_index() != 0 or "://" in str(model_dir):
        return
    from codeio_jax.models.checkpoint import CONFIG_FILE, config_to_dict
    from codeio_jax.models.lora import BASE_REFERENCE

    Path(model_dir).mkdir(parents=True, exist_ok=True)
    (Path(model_dir) / CONFIG_FILE).write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
    if config.lora is not None:
        (Path(model_dir) / BASE_REFERENCE).write_text(
            json.dumps({"init_from": str(Path(init_from).absolute())}, indent=2) + "\n")


def _read_model(folder, config: ModelConfig, shapes: Any, shardings: Any) -> Any:
    """The parameters of a model checkpoint (or of a run, merged if it trained
    adapters), read straight into their shardings; another architecture is an error."""
    from codeio_jax.models import checkpoint

    saved, params = checkpoint.load(folder, _abstract(shapes, shardings))
    architecture = ("family", "vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                    "num_kv_heads", "head_dim")
    different = [name for name in architecture if getattr(saved, name) != getattr(config, name)]
    if different:
        raise ValueError(f"init_from {folder} holds another architecture ({', '.join(different)} differ)")
    return params


def fresh_state(params, tx, seed: int, shardings: TrainState) -> TrainState:
    """A step-0 train state around given parameters."""
    def fresh(params):
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                          rng=jax.random.split(jax.random.PRNGKey(seed))[0])

    return jax.jit(fresh, out_shardings=shardings)(params)


def _check_base_reference(model_dir, init_from) -> None:
    """A LoRA run resumes over the base it started from, never another."""
    from codeio_jax.models.lora import BASE_REFERENCE

    path = Path(str(model_dir)) / BASE_REFERENCE
    if "://" in str(model_dir) or not path.exists():
        return
    recorded = json.loads(path.read_text())["init_from"]
    if Path(recorded) != Path(init_from).absolute():
        raise ValueError(f"{model_dir} trains adapters over {recorded}, but this run names init_from {init_from}: "
                         "a LoRA run resumes over the base it started from (or use another model_dir)")


def evaluated_model(config: ModelConfig) -> Callable[[Any, Any], tuple[ModelConfig, Any]]:
    """(config, params) -> what an evaluator runs: the model itself, or with LoRA the
    base with the adapters merged in (the plain model the adapted one computes)."""
    if config.lora is None:
        return lambda params, frozen: (config, params)
    from codeio_jax.models.lora import merge

    merged = jax.jit(functools.partial(merge, config))
    plain = config.replace(lora=None)
    return lambda adapters, frozen: (plain, merged(frozen, adapters))
