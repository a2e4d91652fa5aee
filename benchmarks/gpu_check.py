"""The GPU check: one script, one call, a table at the end (for a session lent a device).

On a Llama-3.2-1B shape with random weights (models/presets.py: llama3_2_1b):
  1. bfloat16 forward against float32 on the same device: max abs and relative
     logit error, and how often the top-1 token agrees;
  2. decode tokens/s of the sampler (bf16, prompts of 128, 256 new tokens greedy)
     at batch 1, 8 and 32;
  3. a training step (bf16 compute, float32 master weights, AdamW, remat) at
     sequence 2048: step time, tokens/s and MFU against the card's bf16 peak;
  4. cuDNN's fused attention against XLA's (attention_impl cudnn vs xla): the
     same train step's time, and the bf16 logits' difference between the two;
  5. dropless MoE against dense (moe_impl), on DeepSeek-V2-Lite's shape cut to
     --moe-layers layers: train-step time and the logits' difference.
Imports no TensorFlow, SeqIO or gin-dependent input code beyond the trainer's
modules (gin-config travels as a wheel). `--preset tiny_llama --length 128`
smoke-tests it on CPU.

Run: python benchmarks/gpu_check.py [--preset llama3_2_1b] [--length 2048] [--batch 8]
"""

import argparse
import functools
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeio_jax.models.decoder import Decoder, init_params  # noqa: E402
from codeio_jax.models.presets import preset  # noqa: E402
from codeio_jax.sampling import Sampler  # noqa: E402
from codeio_jax.training.input import SyntheticInput  # noqa: E402
from codeio_jax.training.metrics import peak_flops_per_device  # noqa: E402
from codeio_jax.training.optimizer import OptimizerConfig, make_optimizer  # noqa: E402
from codeio_jax.training.step import flops_per_token, init_state, train_step  # noqa: E402


def unboxed(config, seed=0):
    return jax.tree_util.tree_map(lambda x: x.value if hasattr(x, "value") else x,
                                  jax.jit(init_params, static_argnums=0)(config, jax.random.PRNGKey(seed)),
                                  is_leaf=lambda x: hasattr(x, "value"))


def precision(config, length):
    params = unboxed(config)
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, config.vocab_size, (4, length)))
    f32 = jax.jit(lambda p, t: Decoder(config.replace(dtype="float32")).apply({"params": p}, t)[0])
    b16 = jax.jit(lambda p, t: Decoder(config.replace(dtype="bfloat16")).apply({"params": p}, t)[0])
    exact = np.asarray(f32(params, tokens), np.float32)
    fast = np.asarray(b16(params, tokens).astype(jnp.float32))
    diff = np.abs(fast - exact)
    return {"max abs": float(diff.max()), "relative": float(diff.max() / np.abs(exact).max()),
            "top-1 agree": float((fast.argmax(-1) == exact.argmax(-1)).mean())}


def decode_speed(config, batches, new_tokens=256, prompt=128):
    params = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), unboxed(config))
    sampler = Sampler(config.replace(dtype="bfloat16"), params, max_length=prompt + new_tokens)
    rows = []
    for batch in batches:
        prompts = np.random.RandomState(batch).randint(0, config.vocab_size, (batch, prompt)).tolist()
        sampler.generate(prompts, new_tokens)  # compile
        started = time.perf_counter()
        done = sampler.generate(prompts, new_tokens)
        seconds = time.perf_counter() - started
        rows.append((batch, sum(c.completion_tokens for c in done) / seconds, seconds))
    return rows


def train_speed(config, batch, length, steps, remat):
    config = config.replace(dtype="bfloat16", param_dtype="float32", remat=remat)
    tx, schedule = make_optimizer(OptimizerConfig(warmup_steps=10), 1000)
    state = jax.jit(functools.partial(init_state, config, tx, 0))()
    step = jax.jit(functools.partial(train_step, model=Decoder(config), optimizer=tx, schedule=schedule,
                                     loss_chunk_length=512), donate_argnums=0)
    data = SyntheticInput(config.vocab_size, length, batch)
    state, metrics = step(state, next(data))
    jax.block_until_ready(metrics)
    batches = [jax.device_put(next(data)) for _ in range(steps)]
    started = time.perf_counter()
    for b in batches:
        state, metrics = step(state, b)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - started) / steps
    tokens_per_s = batch * length / seconds
    peak = peak_flops_per_device()
    mfu = flops_per_token(config, length) * tokens_per_s / peak if peak else None
    return seconds, tokens_per_s, mfu, float(metrics["loss"])


def logits_difference(config, changed, length):
    """Max abs difference of bf16 logits between `config` and `config.replace(**changed)`, same weights."""
    config = config.replace(dtype="bfloat16")
    params = unboxed(config)
    tokens = jnp.asarray(np.random.RandomState(1).randint(0, config.vocab_size, (2, length)))
    outputs = []
    for variant in (config, config.replace(**changed)):
        forward = jax.jit(lambda p, t, variant=variant: Decoder(variant).apply({"params": p}, t)[0])
        outputs.append(np.asarray(forward(params, tokens).astype(jnp.float32)))
    return float(np.abs(outputs[0] - outputs[1]).max())


def compare(config, field, baseline, candidate, batch, length, steps, remat):
    """(rows for the table) the train step with `field` = baseline against candidate."""
    from codeio_jax.models.attention import UnsupportedAttention

    rows = []
    try:
        timed = {value: train_speed(config.replace(**{field: value}), batch, length, steps, remat)
                 for value in (baseline, candidate)}
        difference = logits_difference(config.replace(**{field: baseline}), {field: candidate}, min(length, 512))
    except UnsupportedAttention as exc:
        return [(f"{field} {candidate} vs {baseline}", f"n/a ({exc})")]
    for value, (seconds, tokens_per_s, mfu, loss) in timed.items():
        extra = f", MFU {100 * mfu:.1f}%" if mfu else ""
        rows.append((f"train step, {field} {value}, batch {batch} x {length}",
                     f"{1000 * seconds:.0f} ms, {tokens_per_s:,.0f} tokens/s{extra}, loss {loss:.3f}"))
    speedup = timed[baseline][0] / timed[candidate][0]
    rows.append((f"{field}: {candidate} against {baseline}", f"{speedup:.2f}x the speed; bf16 logits differ by "
                                                              f"{difference:.3e} at most"))
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="llama3_2_1b")
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--remat", default="dots_with_no_batch_dims")
    parser.add_argument("--decode-batches", default="1,8,32")
    parser.add_argument("--moe-preset", default="deepseek_v2_lite")
    parser.add_argument("--moe-layers", type=int, default=4, help="the MoE model's layers (the first is dense)")
    parser.add_argument("--moe-length", type=int, default=2048)
    args = parser.parse_args()
    config = preset(args.preset)
    device = jax.devices()[0]
    print(f"{args.preset} on {device.platform} ({device.device_kind}), jax {jax.__version__}\n", flush=True)
    check = precision(config, min(args.length, 512))
    print(f"bf16 vs f32 forward: max abs {check['max abs']:.3e}, relative {check['relative']:.3e}, "
          f"top-1 agree {100 * check['top-1 agree']:.1f}%", flush=True)
    decode = decode_speed(config, [int(b) for b in args.decode_batches.split(",")])
    seconds, tokens_per_s, mfu, loss = train_speed(config, args.batch, args.length, args.steps, args.remat)
    attention = compare(config, "attention_impl", "xla", "cudnn", args.batch, args.length, args.steps, args.remat)
    moe_config = preset(args.moe_preset).replace(num_layers=args.moe_layers)
    moe = compare(moe_config, "moe_impl", "dense", "dropless", max(1, args.batch // 2), args.moe_length,
                  args.steps, args.remat)
    print("\n| measurement | value |\n|---|---|")
    print(f"| bf16 vs f32 logits, max abs / relative | {check['max abs']:.3e} / {check['relative']:.3e} |")
    print(f"| bf16 vs f32 top-1 agreement | {100 * check['top-1 agree']:.1f}% |")
    for batch, rate, secs in decode:
        print(f"| decode, batch {batch}, 128 + 256 tokens | {rate:,.0f} tokens/s ({secs:.2f} s) |")
    print(f"| train step, batch {args.batch} x {args.length}, bf16, remat {args.remat} | {1000 * seconds:.0f} ms, "
          f"{tokens_per_s:,.0f} tokens/s, loss {loss:.3f} |")
    print(f"| MFU (bf16 peak {peak_flops_per_device() or float('nan'):.3g} FLOP/s) | "
          f"{'n/a (unknown peak)' if mfu is None else f'{100 * mfu:.1f}%'} |")
    for name, value in attention + moe:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
