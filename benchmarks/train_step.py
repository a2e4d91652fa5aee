"""Train-step speed: ours against transformers + torch, same model, same shapes, same run.

A Llama-shaped model (default: `tiny_llama`-like but big enough to time: hidden
256, 4 layers, 8 heads, 4 KV heads, MLP 1024, vocab 8192), batch 8 x 512
tokens of synthetic data, AdamW, float32 on CPU. Ours: the trainer's jitted
step (codeio_jax/training/step.py) on one device. Baseline: LlamaForCausalLM
with torch.optim.AdamW, loss.backward(), optimizer.step(). Reported: tokens/s
each (median of timed steps after warm-up) and the ratio; with --preset and
--dtype bfloat16 on a GPU: step time and MFU against the card's bf16 peak.

Run: .venv/bin/python benchmarks/train_step.py [--preset llama3_2_1b --length 2048 --batch 8 --dtype bfloat16]
"""

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeio_jax.models.config import ModelConfig  # noqa: E402
from codeio_jax.models.decoder import Decoder  # noqa: E402
from codeio_jax.models.presets import preset  # noqa: E402
from codeio_jax.training.input import SyntheticInput  # noqa: E402
from codeio_jax.training.metrics import peak_flops_per_device  # noqa: E402
from codeio_jax.training.optimizer import OptimizerConfig, make_optimizer  # noqa: E402
from codeio_jax.training.step import flops_per_token, init_state, train_step  # noqa: E402

BENCH_MODEL = ModelConfig(family="llama", vocab_size=8192, hidden_size=256, intermediate_size=1024, num_layers=4,
                          num_heads=8, num_kv_heads=4, head_dim=32, norm_eps=1e-5)


def ours(config, batch, length, steps):
    tx, schedule = make_optimizer(OptimizerConfig(learning_rate=1e-4, warmup_steps=0, clip_norm=0.0), 1000)
    state = init_state(config, tx, 0)
    step = jax.jit(functools.partial(train_step, model=Decoder(config), optimizer=tx, schedule=schedule),
                   donate_argnums=0)
    data = SyntheticInput(config.vocab_size, length, batch)
    started = time.perf_counter()
    state, metrics = step(state, next(data))
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - started
    times = []
    for _ in range(steps):
        batch_np = next(data)
        started = time.perf_counter()
        state, metrics = step(state, batch_np)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - started)
    return statistics.median(times), compile_s, float(metrics["loss"])


def transformers_step(config, batch, length, steps):
    import torch
    import transformers as tr

    torch.set_num_threads(len(__import__("os").sched_getaffinity(0)))
    torch.manual_seed(0)
    model = tr.LlamaForCausalLM(tr.LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads, head_dim=config.head_dim, rms_norm_eps=config.norm_eps,
        tie_word_embeddings=False))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = SyntheticInput(config.vocab_size, length, batch)
    times = []
    for i in range(steps + 2):
        arrays = next(data)
        inputs = torch.from_numpy(arrays["decoder_input_tokens"].astype(np.int64))
        labels = torch.from_numpy(arrays["decoder_target_tokens"].astype(np.int64))
        started = time.perf_counter()
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= 2:  # the first steps allocate
            times.append(time.perf_counter() - started)
    return statistics.median(times), float(loss.detach())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default=None, help="a models/presets.py name (default: the bench model)")
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--remat", default="none")
    parser.add_argument("--no-baseline", action="store_true", help="skip transformers (e.g. on a GPU machine)")
    args = parser.parse_args()
    config = (preset(args.preset) if args.preset else BENCH_MODEL).replace(dtype=args.dtype, remat=args.remat)
    tokens = args.batch * args.length
    device = jax.devices()[0]
    print(f"model {args.preset or 'bench llama'}: hidden {config.hidden_size}, {config.num_layers} layers; batch "
          f"{args.batch} x {args.length}; {args.dtype}; {device.platform} ({device.device_kind})\n")
    step_s, compile_s, loss = ours(config, args.batch, args.length, args.steps)
    rows = [("codeio-jax (jit)", step_s, loss)]
    if not args.no_baseline:
        base_s, base_loss = transformers_step(config, args.batch, args.length, args.steps)
        rows.append(("transformers + torch", base_s, base_loss))
    print(f"{'implementation':<24}{'step ms':>9}{'tokens/s':>12}{'last loss':>12}")
    for name, seconds, first in rows:
        print(f"{name:<24}{1000 * seconds:>9.1f}{tokens / seconds:>12,.0f}{first:>12.3f}")
    print(f"\ncompile: {compile_s:.1f} s (once)")
    if not args.no_baseline:
        print(f"ours / transformers: {rows[1][1] / rows[0][1]:.2f}x tokens/s")
    peak = peak_flops_per_device()
    if peak:
        mfu = flops_per_token(config, args.length) * tokens / step_s / peak
        print(f"MFU: {100 * mfu:.1f}% of {peak / 1e12:.0f} TFLOP/s bf16 peak")


if __name__ == "__main__":
    main()
