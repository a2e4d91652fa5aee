"""Input pipeline speed against what the CPU smoke step consumes, in one run.

Data: the pipeline's CodeI/O++ examples of the embedded corpus (made here with
the trace teacher), a byte-level BPE trained on them, the `codeio_pp` mixture
packed by the chat feature converter: batches of 8 x 1024 tokens. Measured:
packed batches per second out of SeqioInput (host numpy, as the trainer takes
them), and training steps per second of the tiny Llama (gin/models/tiny_llama.gin)
on those batches, float32 on this CPU. Target: the input at least 10x faster.

Run: .venv/bin/python benchmarks/input_pipeline.py
"""

import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH, LENGTH, BATCHES = 8, 1024, 60


def main():
    from codeio_jax.data.pipeline import run_pipeline
    from codeio_jax.models.decoder import Decoder
    from codeio_jax.models.presets import preset
    from codeio_jax.training.input import SeqioInput
    from codeio_jax.training.optimizer import OptimizerConfig, make_optimizer
    from codeio_jax.training.step import init_state, train_step
    from tasks import codeio
    from tasks.tokenizer_training import train_bpe
    from tasks.vocabularies import HFTokenizerVocabulary

    tmp = Path(tempfile.mkdtemp(prefix="bench-input-"))
    report = run_pipeline(work_dir=tmp / "run", rounds=1)
    examples = [json.loads(line) for line in report.examples.read_text().splitlines()]
    tokenizer = train_bpe([e["prompt"] + e["turn_1"] for e in examples], tmp / "tokenizer", "qwen2", 2048)
    codeio.register_codeio_tasks(data_dir=report.work_dir / "tfrecords",
                                 vocabulary=HFTokenizerVocabulary(tokenizer), family="qwen2")
    inputs = SeqioInput("codeio_pp", length=LENGTH, batch_size=BATCH)
    first = time.perf_counter()
    next(inputs)
    startup = time.perf_counter() - first
    started = time.perf_counter()
    batches = [next(inputs) for _ in range(BATCHES)]
    input_rate = BATCHES / (time.perf_counter() - started)

    config = preset("tiny_llama").replace(vocab_size=2048)
    tx, schedule = make_optimizer(OptimizerConfig(), 1000)
    state = init_state(config, tx, 0)
    step = jax.jit(functools.partial(train_step, model=Decoder(config), optimizer=tx, schedule=schedule),
                   donate_argnums=0)
    state, metrics = step(state, batches[0])
    jax.block_until_ready(metrics)
    started = time.perf_counter()
    for batch in batches[1:21]:
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    step_rate = 20 / (time.perf_counter() - started)
    used = sum(int((b["decoder_segment_ids"] > 0).sum()) for b in batches) / (BATCHES * BATCH * LENGTH)
    print(f"codeio_pp mixture, {len(examples)} examples, packed {BATCH} x {LENGTH} ({used:.0%} of positions used)\n")
    print(f"{'':<34}{'per second':>12}")
    print(f"{'input: packed batches':<34}{input_rate:>12.1f}   (first batch after {startup:.1f} s)")
    print(f"{'tiny Llama train steps (CPU)':<34}{step_rate:>12.1f}")
    print(f"\ninput / consumption: {input_rate / step_rate:.1f}x")


if __name__ == "__main__":
    main()
