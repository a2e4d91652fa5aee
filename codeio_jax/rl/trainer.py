"""The GRPO loop, configured by gin (gin/rl/*.gin).

    prompts -> for each step: prompts_per_step prompts -> G completions each (sampler,
      the policy's own weights) -> rewards by execution (sandbox) -> advantages per group
      -> updates_per_batch policy updates (pjit, training/'s mesh and rules) -> metrics,
      checkpoints, held-out reward

The state is training/'s TrainState (full model, or with LoRA the adapters alone
over a frozen base) placed by the same logical-axis rules, checkpointed by the
same Orbax manager: a restarted run continues from its newest checkpoint, and on
CPU its metrics equal an uninterrupted run's (the prompts of a step and every
completion's seed follow from (seed, step)).

A run may start with a supervised warm-up on the prompts' reference answers
(`warmup_steps`, its own Adam at `warmup_learning_rate`), which teaches a fresh
model the answer format before rewards can reach it; the GRPO state and the
KL reference start from where the warm-up ends, saved as a model checkpoint in
`model_dir/warmed_up` (a resumed run's reference, and the init_from of a
zero-learning-rate control that starts where the run did).

Each metrics.jsonl row (one per `log_every` steps): step, reward_mean, one
reward/<term> per reward term, pass_rate and pass_rate/<task>, kl (the k3 to the
reference when kl_coef > 0; otherwise to the policy that sampled the batch,
measured by the batch's last update: 0 with one update per batch), loss,
clip_fraction, grad_norm, learning_rate, response_length, rollout_s, reward_s,
update_s, rollout_tokens_per_s, skipped_groups (groups whose reward failed:
their errors are in errors.jsonl), and with held-out prompts heldout_reward and
heldout_pass_rate at the run's first step (before its update), every
`heldout_every` steps and at the last: the mean over `heldout_samples`
completions per prompt drawn as the rollouts are (the same seeds at every
measurement, so a run that does not learn measures the same number each time),
or with heldout_samples = 0 over one greedy completion per prompt.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
import optax

from codeio_jax.models.checkpoint import CONFIG_FILE
from codeio_jax.models.config import LoraConfig, ModelConfig
from codeio_jax.models.decoder import Decoder
from codeio_jax.rl import rollout
from codeio_jax.rl.objective import GRPOConfig, group_advantages, grpo_loss, supervised_loss, token_logprobs
from codeio_jax.rl.prompts import PromptSet, RLPrompt
from codeio_jax.rl.rewards import Sample, check_terms, score
from codeio_jax.sampling.sampler import SamplingParams
from codeio_jax.training import partitioning
from codeio_jax.training.checkpoints import Checkpoints
from codeio_jax.training.input import to_global
from codeio_jax.training.metrics import MetricsLog
from codeio_jax.training.optimizer import OptimizerConfig
from codeio_jax.training.step import TrainState
from codeio_jax.training.trainer import (StepSetup, build_step, evaluated_model, fresh_state, frozen_base,
                                         record_run, starting_state)

ERRORS_FILE = "errors.jsonl"
# The policy the supervised warm-up ends at, a model checkpoint in the run's folder.
WARMED_UP = "warmed_up"
ROW_FEATURES = ("advantages",)


class RLError(ValueError):
    """A run that cannot start or cannot go on; the message says what to fix."""


@dataclasses.dataclass
class RLReport:
    model_dir: Path
    start_step: int
    end_step: int
    last_metrics: dict
    heldout: list[tuple[int, float]]  # (step, held-out reward) wherever measured


# rl.sampling: how completions are drawn (its seed is set per completion).
gin.external_configurable(SamplingParams)


@gin.configurable
def rl(model_dir: str | Path = gin.REQUIRED, prompts: PromptSet = gin.REQUIRED, tokenizer: str | Path = gin.REQUIRED,
       heldout: PromptSet | None = None, init_from: str | Path | None = None, model: ModelConfig | None = None,
       chat_family: str | None = None, steps: int = 100, prompts_per_step: int = 4,
       grpo: GRPOConfig = GRPOConfig(), sampling: SamplingParams = SamplingParams(temperature=1.0),
       rewards: Sequence[Any] = (), optimizer: OptimizerConfig = OptimizerConfig(learning_rate=1e-6, warmup_steps=0),
       mesh: partitioning.MeshConfig = partitioning.MeshConfig(), lora: LoraConfig | None = None, seed: int = 0,
       compute_dtype: str = "float32", loss_chunk_length: int = 512, remat: str | None = None,
       scan_layers: bool | None = None, attention_impl: str | None = None, warmup_steps: int = 0,
       warmup_learning_rate: float = 1e-3, log_every: int = 1, checkpoint_every: int = 50,
       keep_checkpoints: int = 3, async_checkpoints: bool = True, heldout_every: int = 0,
       heldout_samples: int = 0, sandbox_workers: int | None = None, reward_timeout_s: float = 3.0,
       on_log: Callable[[dict], None] | None = None) -> RLReport:
    """GRPO on `prompts` (a PromptSet: pipeline_prompts, one_line_functions) for
    `steps` steps of `prompts_per_step` prompts x grpo.group_size completions.

    tokenizer: a folder with tokenizer.json (and the model's chat template, used
      when it has one; chat_family forces one of ours instead).
    init_from: a codeio-jax checkpoint or a training run's folder (a stage-1 SFT
      run: its newest checkpoint, adapters merged); or `model` for a random start.
    lora: train adapters over the frozen init_from model (the KL reference is then
      the base itself: no second copy of the weights).
    rewards: reward terms beside the verified answer (rl/rewards.py).
    remat, scan_layers, attention_impl: override the model's in the update, as
      `train`'s do (a real model's long rollouts need remat on a CPU host);
      generation runs the plain layers with its cache either way.
    warmup_steps: supervised steps on the prompts' reference answers first.
    heldout_samples: completions per held-out prompt, sampled as the rollouts are
      (GRPO raises the expected reward of what it samples); 0 for one greedy each.
    """
    started = time.perf_counter()
    if optimizer.accumulation_steps != 1:
        raise RLError("rl takes one optimizer update per batch of rollouts (updates_per_batch sets how many); "
                      "set OptimizerConfig.accumulation_steps = 1")
    if prompts_per_step < 1:
        raise RLError(f"prompts_per_step must be at least 1, got {prompts_per_step}")
    if heldout_samples < 0:
        raise RLError(f"heldout_samples must be 0 (greedy) or more, got {heldout_samples}")
    if not isinstance(prompts, PromptSet) or not prompts.prompts:
        raise RLError("rl.prompts holds no prompt: bind it to @pipeline_prompts(), @shard_prompts(), "
                      "@cruxeval_prompts() or @one_line_functions()")
    try:
        terms = check_terms(rewards)
    except ValueError as exc:
        raise RLError(str(exc)) from None
    if model is None:
        if init_from is None:
            raise RLError("rl needs a policy: bind rl.init_from (a checkpoint or a training run) or rl.model")
        from codeio_jax.models.checkpoint import load_config

        model = load_config(init_from)
    if lora is not None and init_from is None:
        raise RLError("LoRA adapts a pretrained model: set rl.init_from")
    model_dir = Path(model_dir)
    updates_total = steps * grpo.updates_per_batch
    setup = build_step(model, mesh, optimizer, updates_total, seed, compute_dtype=compute_dtype,
                       loss_chunk_length=loss_chunk_length, lora=lora, remat=remat, scan_layers=scan_layers,
                       attention_impl=attention_impl)
    config = setup.config
    chat = _chat_model(config, tokenizer, chat_family)
    train_prompts, train_ids, errors = _encoded(chat, prompts.prompts, sampling.max_new_tokens)
    errors = [{"step": 0, **row} for row in prompts.errors] + errors
    if not train_prompts:
        raise RLError(f"none of the {len(prompts)} prompts can be asked: {errors[0]['error']}")
    held, held_ids, held_errors = _encoded(chat, heldout.prompts, sampling.max_new_tokens) if heldout else ([], [], [])
    if heldout is not None and not held:
        raise RLError(f"none of the {len(heldout)} held-out prompts can be asked: {held_errors[0]['error']}")
    rows = prompts_per_step * grpo.group_size
    steps_fns = _StepFunctions(setup, grpo, sampling.max_new_tokens, loss_chunk_length)
    checkpoints = Checkpoints(model_dir, keep=keep_checkpoints, every=checkpoint_every,
                              async_save=async_checkpoints)
    from codeio_jax.execution import Limits, Sandbox, SandboxConfig

    sandbox_config = SandboxConfig(workers=sandbox_workers, limits=Limits(timeout_s=reward_timeout_s))
    report_heldout: list[tuple[int, float]] = []
    with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules), Sandbox(sandbox_config) as sandbox:
        frozen = frozen_base(setup, model_dir, init_from)
        resumed = checkpoints.latest_step() is not None
        policy_params = evaluated_model(config)
        warmed_up = model_dir / WARMED_UP

        def begin() -> TrainState:
            """Step 0: init_from's parameters (or a random start), warmed up if asked."""
            initial = starting_state(setup, init_from, seed)
            if not warmup_steps:
                return initial
            params = _warm_up(steps_fns, initial.params, frozen, chat, train_prompts, train_ids, rows,
                              warmup_steps, warmup_learning_rate, seed, sampling.max_new_tokens)
            _save_warmed_up(warmed_up, *policy_params(params, frozen))
            return fresh_state(params, setup.optimizer, seed, setup.state_shardings)

        start_params = None
        if not resumed:
            state = begin()
            start_params = state.params
        else:
            state, _ = checkpoints.restore(setup.abstract_state())
            if grpo.kl_coef > 0 and lora is None:
                # The reference the run first made (with LoRA it is the base itself): its
                # warmed-up policy as saved, or (a folder from before warmed_up/) made again.
                saved = warmup_steps and (warmed_up / CONFIG_FILE).exists()
                start_params = starting_state(setup, warmed_up, seed).params if saved else begin().params
        reference = None
        if grpo.kl_coef > 0:
            reference = frozen if lora is not None else jax.tree_util.tree_map(lambda x: x.copy(), start_params)
        start = int(state.step) // grpo.updates_per_batch
        record_run(model_dir, config, init_from)
        if start == 0:
            _append_errors(model_dir, errors + [{"step": 0, "heldout": True, **row} for row in held_errors])
        log = MetricsLog(model_dir, 0.0, None, jax.device_count(), on_log=on_log)
        metrics: dict = {}
        measure_heldout = functools.partial(_heldout, chat, held, held_ids, sampling, heldout_samples, seed, sandbox,
                                            terms)
        chat.sampler.params = policy_params(state.params, frozen)[1]
        for step in range(start, steps):
            done = step + 1
            row: dict = {}
            if held and step == start == 0:
                row.update(measure_heldout())
                report_heldout.append((0, row["heldout_reward"]))
            indices = _step_indices(len(train_prompts), step, prompts_per_step, seed)
            batch_prompts = [train_prompts[i] for i in indices]
            clock = time.perf_counter()
            groups = rollout.sample_groups(chat, batch_prompts, [train_ids[i] for i in indices], grpo.group_size,
                                           sampling, seed, step)
            rollout_s = time.perf_counter() - clock
            clock = time.perf_counter()
            scored = score([Sample(c.prompt, c.text, len(c.tokens), c.finish_reason, sampling.max_new_tokens)
                            for group in groups for c in group], sandbox, terms)
            reward_s = time.perf_counter() - clock
            kept, rewards_kept, step_errors = [], [], []
            for g, group in enumerate(groups):
                group_scores = scored[g * grpo.group_size:(g + 1) * grpo.group_size]
                failed = next((s.error for s in group_scores if s.error), None)
                if failed:
                    step_errors.append({"step": done, "id": group[0].prompt.id, "error": failed})
                    continue
                kept.append((group, group_scores))
                rewards_kept.append([s.reward for s in group_scores])
            _append_errors(model_dir, step_errors)
            if not kept:
                raise RLError(f"step {done}: the reward of every prompt failed (first: {step_errors[0]['error']}); "
                              f"see {model_dir / ERRORS_FILE}")
            advantages = group_advantages(np.asarray(rewards_kept), grpo)
            training = [(c.prompt_ids, c.tokens) for group, _ in kept for c in group]
            batch = rollout.training_rows(training, rows)
            batch["advantages"] = np.zeros((rows,), np.float32)
            batch["advantages"][:len(training)] = advantages.reshape(-1)
            clock = time.perf_counter()
            placed = steps_fns.place(batch)
            if grpo.updates_per_batch > 1:
                placed["old_logprobs"] = steps_fns.logprobs(state.params, placed, frozen)
            if reference is not None:
                placed["ref_logprobs"] = steps_fns.reference_logprobs(reference, placed)
            for _ in range(grpo.updates_per_batch):
                state, metrics = steps_fns.update(state, placed, frozen)
            # The sampler follows the policy (the update donated the parameters it held).
            chat.sampler.params = policy_params(state.params, frozen)[1]
            metrics = {key: float(value) for key, value in jax.device_get(metrics).items()}
            update_s = time.perf_counter() - clock
            metrics.setdefault("kl", metrics["kl_to_sampler"])
            row.update(metrics)
            row.update(_reward_metrics(kept, [s for _, group_scores in kept for s in group_scores]))
            generated = sum(len(c.tokens) for group in groups for c in group)
            row.update({"rollout_s": rollout_s, "reward_s": reward_s, "update_s": update_s,
                        "rollout_tokens_per_s": generated / max(rollout_s, 1e-9),
                        "skipped_groups": float(len(step_errors))})
            last = done == steps
            if held and (last or (heldout_every and done % heldout_every == 0)):
                measured = measure_heldout()
                if step == start == 0:  # the first row keeps its baseline; the end goes beside it
                    measured = {f"{key}_after": value for key, value in measured.items()}
                    report_heldout.append((done, measured["heldout_reward_after"]))
                else:
                    report_heldout.append((done, measured["heldout_reward"]))
                row.update(measured)
            if done % log_every == 0 or last or "heldout_reward" in row:
                log.write(done, row, None)
            checkpoints.save(done, state, done * prompts_per_step, force=last)
        checkpoints.close()
        log.close()
    metrics = {**metrics, "seconds": time.perf_counter() - started}
    return RLReport(model_dir, start, max(start, steps), metrics, report_heldout)


class _StepFunctions:
    """The jitted pieces of a step, placed like the train step: the update, the
    log-probabilities of a batch, and the supervised warm-up's update."""

    def __init__(self, setup: StepSetup, grpo: GRPOConfig, max_new_tokens: int, chunk_length: int):
        self.setup = setup
        model = Decoder(setup.config)
        mesh = setup.mesh
        row_spec = jax.sharding.PartitionSpec(setup.batch_sharding.spec[0])
        self.row_sharding = jax.sharding.NamedSharding(mesh, row_spec)
        loss = functools.partial(grpo_loss, config=grpo, max_new_tokens=max_new_tokens, chunk_length=chunk_length)
        self.update = jax.jit(functools.partial(_update, model=model, tx=setup.optimizer, schedule=setup.schedule,
                                                loss=loss),
                              out_shardings=(setup.state_shardings, partitioning.replicated(mesh)), donate_argnums=0)
        self.logprobs = jax.jit(lambda params, batch, frozen: token_logprobs(params, model, batch, frozen,
                                                                             chunk_length=chunk_length))
        plain = Decoder(setup.config.replace(lora=None))
        self.reference_logprobs = jax.jit(lambda params, batch: token_logprobs(params, plain, batch,
                                                                               chunk_length=chunk_length))
        self.supervised = functools.partial(supervised_loss, chunk_length=chunk_length)
        self.model = model

    def place(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        features = {k: v for k, v in batch.items() if k not in ROW_FEATURES}
        placed = to_global(features, self.setup.batch_sharding)
        placed.update(to_global({k: batch[k] for k in ROW_FEATURES if k in batch}, self.row_sharding))
        return placed


def _update(state: TrainState, batch: dict, frozen, *, model, tx, schedule, loss):
    rng, dropout_rng = jax.random.split(state.rng)
    (_, metrics), grads = jax.value_and_grad(loss, has_aux=True)(state.params, model, batch, frozen, dropout_rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.global_norm(grads)
    metrics["learning_rate"] = schedule(state.step)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=rng), metrics


def _chat_model(config: ModelConfig, tokenizer: str | Path, family: str | None):
    from codeio_jax.sampling.chat import ChatModel, load_tokenizer
    from codeio_jax.sampling.sampler import Sampler

    folder = Path(tokenizer)
    try:
        tok = load_tokenizer(folder)
    except FileNotFoundError as exc:
        raise RLError(f"rl.tokenizer: {exc}") from None
    if tok.get_vocab_size() > config.vocab_size:
        raise RLError(f"the tokenizer in {folder} has {tok.get_vocab_size()} tokens, more than the model's "
                      f"vocabulary of {config.vocab_size}")
    # Generation runs on the plain model (with LoRA: the base with the adapters merged), with
    # nothing to rematerialise.
    return ChatModel.with_folder_chat(Sampler(config.replace(lora=None, remat="none"), None), folder, family, tok)


def _encoded(chat, prompts: Sequence[RLPrompt], max_new_tokens: int):
    kept, ids, errors = [], [], []
    for prompt in prompts:
        encoded = rollout.encode(chat, prompt, max_new_tokens)
        if isinstance(encoded, str):
            errors.append({"id": prompt.id, "error": encoded})
        else:
            kept.append(prompt)
            ids.append(encoded)
    return kept, ids, errors


def _step_indices(count: int, step: int, per_step: int, seed: int) -> list[int]:
    """The prompts of `step`: the epoch's order (reshuffled per epoch by seed) from step x per_step on."""
    indices = []
    for position in range(step * per_step, (step + 1) * per_step):
        epoch, offset = divmod(position, count)
        order = _epoch_order(count, seed + epoch)
        indices.append(order[offset])
    return indices


@functools.lru_cache(maxsize=4)
def _epoch_order(count: int, seed: int) -> tuple[int, ...]:
    return tuple(np.random.default_rng(seed).permutation(count).tolist())


def _warm_up(fns: _StepFunctions, params, frozen, chat, prompts, prompt_ids, rows: int, steps: int,
             learning_rate: float, seed: int, max_new_tokens: int):
    """`steps` supervised steps on the reference answers that fit the rollout
    budget (their own Adam): the policy's starting parameters."""
    refs = [(p, ids) for p, ids in zip(prompts, prompt_ids) if p.reference]
    if not refs:
        raise RLError("rl.warmup_steps needs prompts with reference answers (one_line_functions, shard_prompts "
                      "and cruxeval_prompts have them; a pipeline's prompts.jsonl does not: start from a stage-1 "
                      "run with init_from instead)")
    end = chat.stop_token_ids[0] if chat.stop_token_ids else None
    encoded = [tuple(chat.tokenizer.encode(p.reference, add_special_tokens=False).ids) + ((end,) if end is not None
                                                                                             else ())
               for p, _ in refs]
    # A reply longer than the rollouts may be would teach what GRPO then cuts off.
    fitting = [(ref, answer) for ref, answer in zip(refs, encoded) if len(answer) <= max_new_tokens]
    if not fitting:
        raise RLError(f"none of the {len(refs)} reference answers fits the rollout budget of {max_new_tokens} "
                      f"tokens (the shortest has {min(map(len, encoded))}): raise SamplingParams.max_new_tokens "
                      "or warm up elsewhere (init_from a stage-1 run)")
    refs, answers = [ref for ref, _ in fitting], [answer for _, answer in fitting]
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate))
    step_fn = jax.jit(functools.partial(_update, model=fns.model, tx=tx, loss=fns.supervised,
                                        schedule=optax.constant_schedule(learning_rate)), donate_argnums=0)
    params = jax.tree_util.tree_map(lambda x: x.copy(), params)
    state = TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params, opt_state=tx.init(params),
                       rng=jax.random.PRNGKey(seed))
    for step in range(steps):
        picked = _step_indices(len(refs), step, rows, seed)
        batch = fns.place(rollout.training_rows([(refs[i][1], answers[i]) for i in picked], rows))
        state, _ = step_fn(state, batch, frozen)
    return state.params


def _save_warmed_up(folder: Path, config: ModelConfig, params) -> None:
    """The warmed-up policy as a model checkpoint: another run's init_from (a
    zero-learning-rate control starts where this run did) and a resumed run's
    KL reference."""
    from codeio_jax.models import checkpoint

    if jax.process_index() == 0 and folder.exists():  # left by a run killed before its first checkpoint
        shutil.rmtree(folder)
    checkpoint.save(folder, config, params)


def _heldout(chat, prompts, prompt_ids, sampling: SamplingParams, samples: int, seed: int, sandbox,
             terms) -> dict:
    if samples:  # the seeds of step "heldout": the same completions while the policy stays the same
        groups = rollout.sample_groups(chat, prompts, prompt_ids, samples, sampling, seed, "heldout")
    else:  # temperature 0: the seeds do not matter
        groups = rollout.sample_groups(chat, prompts, prompt_ids, 1,
                                       SamplingParams(max_new_tokens=sampling.max_new_tokens), seed, "heldout")
    completions = [c for group in groups for c in group]
    scored = score([Sample(c.prompt, c.text, len(c.tokens), c.finish_reason, sampling.max_new_tokens)
                    for c in completions], sandbox, terms)
    failed = next((s.error for s in scored if s.error), None)
    if failed:
        raise RLError(f"a held-out reward failed: {failed}")
    return {"heldout_reward": float(np.mean([s.reward for s in scored])),
            "heldout_pass_rate": float(np.mean([s.status == "correct" for s in scored]))}


def _reward_metrics(kept, scores) -> dict:
    row = {"reward_mean": float(np.mean([s.reward for s in scores])),
           "pass_rate": float(np.mean([s.status == "correct" for s in scores]))}
    for name in scores[0].parts:
        row[f"reward/{name}"] = float(np.mean([s.parts[name] for s in scores]))
    tasks: dict[str, list[bool]] = {}
    lengths = []
    for group, group_scores in kept:
        for c, s in zip(group, group_scores):
            tasks.setdefault(c.prompt.task, []).append(s.status == "correct")
            lengths.append(len(c.tokens))
    for task, passed in sorted(tasks.items()):
        row[f"pass_rate/{task}"] = float(np.mean(passed))
    row["response_length"] = float(np.mean(lengths))
    row["zero_std_groups"] = float(sum(len({s.reward for s in gs}) == 1 for _, gs in kept))
    return row


def _append_errors(model_dir: Path, rows: list[dict]) -> None:
    if not rows or jax.process_index() != 0:
        return
    model_dir.mkdir(parents=True, exist_ok=True)
    with open(model_dir / ERRORS_FILE, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
