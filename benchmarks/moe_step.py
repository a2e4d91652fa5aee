"""Dropless MoE (tokens sorted by expert, grouped matmuls: jax.lax.ragged_dot off
TPU, megablox's gmm and tgmm on TPU) against the dense reference (every expert
on every token), same model, same batch, same run.

Timed: the jitted training step (codeio_jax/training/step.py, AdamW, float32)
on one device for the tiny DeepSeek preset and for a bigger MoE shape where
the dense path's extra FLOPs show (64 experts, top-6); steps of the two
implementations alternate, and each gets the median of its timed steps.
Counted: XLA's flops for one step (`cost_analysis()["flops"]` of the compiled
step) against the model's count, `flops_per_token(config, length) * tokens`
(active experts only), for those shapes and for DeepSeek-V2-Lite's real shape
with fewer layers and a short sequence, compiled only: for this machine's
backend, and for one TPU v5p chip (95 GB: the float32 state fits) through
libtpu on this host (no TPU needed), where the dropless path runs megablox's
kernels, grouped in the backward pass too, and each kernel reports its flops to
XLA. XLA:CPU has no grouped matmul: there jax lowers ragged_dot to a masked
product with every expert, so on CPU dropless counts (and costs) more than
dense.

Run: .venv/bin/python benchmarks/moe_step.py [--steps 5] [--lite-layers 3] [--lite-length 256] [--no-tpu]
"""

import argparse
import contextlib
import functools
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeio_jax.models.config import MoEConfig  # noqa: E402
from codeio_jax.models.decoder import Decoder  # noqa: E402
from codeio_jax.models.presets import preset  # noqa: E402
from codeio_jax.training.input import SyntheticInput  # noqa: E402
from codeio_jax.training.optimizer import OptimizerConfig, make_optimizer  # noqa: E402
from codeio_jax.training.step import BATCH_KEYS, flops_per_token, init_state, train_step  # noqa: E402

IMPLS = ("dense", "dropless")
# The tiny preset with 64 experts of top-6 (V2-Lite's routing) and wider layers.
MOE64 = preset("tiny_deepseek_v2").replace(
    vocab_size=2048, hidden_size=256, intermediate_size=1024,
    moe=MoEConfig(num_experts=64, num_shared_experts=2, experts_per_token=6, expert_intermediate_size=128,
                  first_dense_layers=1))


def step_fn(config):
    tx, schedule = make_optimizer(OptimizerConfig(learning_rate=1e-4, warmup_steps=0, clip_norm=0.0), 1000)
    step = jax.jit(functools.partial(train_step, model=Decoder(config), optimizer=tx, schedule=schedule),
                   donate_argnums=0)
    return step, tx


def xla_flops(config, batch, length, device=None):
    """XLA's flop count of one compiled step over abstract arrays (nothing allocated).
    For a device (the TPU chip), the step is compiled under a one-device mesh of
    it, as the trainer compiles under its mesh: the model's kernels are chosen
    by the mesh's platform (megablox for the dropless experts on TPU)."""
    step, tx = step_fn(config)
    if device is None:
        placed, mesh = {}, contextlib.nullcontext()
    else:
        placed = {"sharding": jax.sharding.SingleDeviceSharding(device)}
        mesh = jax.set_mesh(jax.sharding.Mesh(np.array([device]), ("data",),
                                              axis_types=(jax.sharding.AxisType.Auto,)))
    state = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, **placed),
                                   jax.eval_shape(functools.partial(init_state, config, tx, 0)))
    inputs = {key: jax.ShapeDtypeStruct((batch, length), jnp.int32, **placed) for key in BATCH_KEYS}
    with mesh:
        return step.lower(state, inputs).compile().cost_analysis()["flops"]


def time_both(config, batch, length, steps):
    """Median step seconds and last loss per implementation, their steps interleaved."""
    data = SyntheticInput(config.vocab_size, length, batch)
    runs = {}
    for impl in IMPLS:
        variant = config.replace(moe_impl=impl)
        step, tx = step_fn(variant)
        state = init_state(variant, tx, 0)
        state, metrics = step(state, next(data))  # compile
        jax.block_until_ready(metrics)
        runs[impl] = [step, state, metrics, []]
    for _ in range(steps):
        batch_np = next(data)
        for impl in IMPLS:
            run = runs[impl]
            started = time.perf_counter()
            run[1], run[2] = run[0](run[1], batch_np)
            jax.block_until_ready(run[2])
            run[3].append(time.perf_counter() - started)
    return {impl: (statistics.median(run[3]), float(run[2]["loss"])) for impl, run in runs.items()}


def tpu_device():
    """One chip of a TPU v5p slice as libtpu describes it on any host, or None without libtpu."""
    import os

    from codeio_jax.training import hardware

    # Only compiling: libtpu's one-process-per-host lock (held by any other
    # compile-only run on this host) does not apply.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        return hardware.topology_devices(hardware.parse_topology("v5p-8"))[0]
    except hardware.TopologyError as exc:
        print(f"(no TPU compile: {exc})")
        return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--lite-layers", type=int, default=3, help="V2-Lite layers compiled (1 dense, rest MoE)")
    parser.add_argument("--lite-length", type=int, default=256)
    parser.add_argument("--no-tpu", action="store_true", help="skip the libtpu compile")
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f"train step, dropless against dense MoE; float32; {device.platform} ({device.device_kind}), "
          f"{args.steps} timed steps each, interleaved\n")
    shapes = [("tiny_deepseek_v2", preset("tiny_deepseek_v2"), 8, 128), ("moe64 (hidden 256)", MOE64, 2, 128)]
    print(f"{'shape':<20}{'experts':>8}{'top-k':>6}{'batch':>9}  {'impl':<10}{'step ms':>9}{'loss':>8}"
          f"{'XLA GFLOP':>11}{'model GFLOP':>13}{'XLA/model':>11}")
    ratios = []
    for name, config, batch, length in shapes:
        timed = time_both(config, batch, length, args.steps)
        model = flops_per_token(config, length) * batch * length
        for impl in IMPLS:
            flops = xla_flops(config.replace(moe_impl=impl), batch, length)
            print(f"{name if impl == 'dense' else '':<20}"
                  f"{config.moe.num_experts if impl == 'dense' else '':>8}"
                  f"{config.moe.experts_per_token if impl == 'dense' else '':>6}"
                  f"{f'{batch}x{length}' if impl == 'dense' else '':>9}  {impl:<10}"
                  f"{1000 * timed[impl][0]:>9.1f}{timed[impl][1]:>8.3f}{flops / 1e9:>11.2f}{model / 1e9:>13.2f}"
                  f"{flops / model:>11.2f}")
        ratios.append((name, timed["dense"][0] / timed["dropless"][0]))
    print("\ndropless speed-up over dense (dense step time / dropless step time): "
          + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios))

    layers, tokens = args.lite_layers, args.lite_length
    # xla attention on both backends, so that only the MoE layers' kernels differ between them.
    lite = preset("deepseek_v2_lite").replace(num_layers=layers, dtype="float32", attention_impl="xla")
    one_less = lite.replace(num_layers=layers - 1)
    model = flops_per_token(lite, tokens) * tokens
    model_layer = model - flops_per_token(one_less, tokens) * tokens
    print(f"\nDeepSeek-V2-Lite's shape (hidden 2048, 64 experts top-6 + 2 shared, expert mlp 1408, vocab 102400) "
          f"with {layers} of its 27 layers (1 dense, {layers - 1} MoE), batch 1 x {tokens}: compiled only, "
          f"nothing run. 'one MoE layer': the step with {layers} layers minus the step with {layers - 1}.")
    print(f"{'backend':<30}{'impl':<10}{'XLA GFLOP':>11}{'model GFLOP':>13}{'XLA/model':>11}"
          f"{'one MoE layer: XLA/model':>26}")
    backends = [(f"{device.platform} (this host)", None)]
    tpu = None if args.no_tpu else tpu_device()
    if tpu is not None:
        backends.append(("tpu v5p, 1 chip (libtpu)", tpu))
    for label, target in backends:
        for impl in IMPLS:
            flops = xla_flops(lite.replace(moe_impl=impl), 1, tokens, target)
            layer = flops - xla_flops(one_less.replace(moe_impl=impl), 1, tokens, target)
            print(f"{label if impl == 'dense' else '':<30}{impl:<10}{flops / 1e9:>11.1f}{model / 1e9:>13.1f}"
                  f"{flops / model:>11.2f}{layer / model_layer:>26.2f}")
    print("target: dropless within 1.3x of the model's count (active experts only)")


if __name__ == "__main__":
    main()
