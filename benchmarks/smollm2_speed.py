"""Speed and peak memory on a real shape: SmolLM2-135M-Instruct (hidden 576, 30
layers, 9 query / 3 key-value heads of 64, MLP 1536, vocabulary 49,152, tied
embeddings), ours against transformers + torch, float32 on CPU, same run.

The weights: the real GGUF the Makefile fetches (.cache/models/..., Q4_1),
converted once into a temporary Hugging Face folder by codeio_jax.models.gguf
(open_gguf + write_hf); both sides load that folder (ours: convert.load_hf;
theirs: AutoModelForCausalLM, float32, torch on every core this process may use).

Cases, each measured on both sides:
  full    train-step tokens/s, full fine-tuning, batch 2 x 512 of random tokens
          (every position trained). Ours: trainer.build_step (one CPU device,
          compute float32, remat "full", layers as a scan, loss 256 positions at
          a time), the state built around the loaded weights, the step compiled
          ahead as the trainer does it (compile time reported apart). Theirs:
          the model in train mode, no gradient checkpointing, full-vocabulary
          logits, cross-entropy, loss.backward(), torch.optim.AdamW.step().
          Both: AdamW lr 1e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0.01,
          constant rate, no clipping; the same batches.
  lora    the same with LoRA rank 16, alpha 32, targets all-linear (q/k/v/o,
          gate/up/down in every layer), no dropout: ours build_step(lora=...),
          the adapters the state and the loaded weights the frozen base; theirs
          peft.get_peft_model with AdamW over the trainable parameters only.
  decode  greedy decoding tokens/s, batch 8, prompts of 64 tokens (the first
          CRUXEval programs of at least 64 tokens, cut to 64; random tokens when
          the data set is absent), 128 new tokens, no stop token. Ours:
          sampling.Sampler (its first call, compile included, reported apart);
          theirs: model.generate (greedy, KV cache). The greedy tokens are
          compared: rows equal throughout, and each row's agreeing prefix.
Step time: the median of --steps timed steps after one warm-up step (ours: after
compiling too). Decoding: the best of --runs timed calls after a warm-up call.
Tokens/s counts every token of the batch (decoding: batch x new tokens, prefill
included in the time). Ratio: ours tokens/s / theirs.

Peak memory: each (case, side) runs in its own child process (this script with
--only CASE --side SIDE), the ours side never importing torch and the torch side
never importing jax, and reports its VmHWM (peak resident set) at the end: model
load, compile and run included. Memory after loading the model alone is
reported too. On the torch side, no gradient checkpointing is a speed advantage
and a memory cost against our full remat.

Cores: by default every usable core, torch with as many threads. --cores N pins
each child to N cores (torch N threads; XLA sizes its pool by the affinity too).
The results file's figures come from a 2-core machine shared with another
engineer's work, measured with --cores 1 --shared, for this reason: when other
work holds a core, torch's OpenMP parallel regions wait at every barrier for a
descheduled thread, and its times grow 10-30x (measured here: a 2 x 8
forward at 2 threads took 0.06 s idle and 1.3 s with the other work running;
at 1 thread 0.11 s either way), while XLA's pool suffers far less. So on
a shared machine the 2-core ratio measures the neighbour's load, not the code;
at one core each, both sides lose only the share of the core they are denied.
Each child reports the seconds its threads spent ready but waiting for a core
(/proc schedstat) per timed second, and the load average when it ended; the
load average before and after the run is recorded. The children run in turn,
ours then theirs for each case.

Writes benchmarks/results/smollm2_speed.md.
Run: .venv/bin/python benchmarks/smollm2_speed.py [--cores 1 --shared] [--steps 3 --runs 3]
Smoke: .venv/bin/python benchmarks/smollm2_speed.py --batch 1 --length 32 --steps 1 --decode-batch 2 \\
    --prompt 8 --new 4 --runs 1 --results /tmp/smollm2_speed.md
"""

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SMOLLM2 = ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
CRUXEVAL = ROOT.parent / "shared" / "data" / "cruxeval" / "cruxeval.jsonl"
RESULTS = ROOT / "benchmarks" / "results" / "smollm2_speed.md"
CASES = ("full", "lora", "decode")
SIDES = ("ours", "torch")
LEARNING_RATE, BETAS, EPS, WEIGHT_DECAY = 1e-4, (0.9, 0.999), 1e-8, 0.01
LORA_RANK, LORA_ALPHA = 16, 32.0
LOSS_CHUNK = 256
MIB = 1 << 20


# --- shared by both sides: numpy only -------------------------------------------------

def batches(vocab: int, batch: int, length: int, seed: int = 0):
    """Random tokens, every position trained, one segment per row: the layout of
    training/input.SyntheticInput, rebuilt here with numpy so that the torch child
    imports no jax."""
    position = 0
    while True:
        rng = np.random.default_rng((seed, position))
        position += 1
        tokens = rng.integers(0, vocab, (batch, length + 1), dtype=np.int32)
        ones = np.ones((batch, length), np.int32)
        yield {"decoder_input_tokens": tokens[:, :-1], "decoder_target_tokens": tokens[:, 1:],
               "decoder_loss_weights": ones, "decoder_segment_ids": ones,
               "decoder_positions": np.broadcast_to(np.arange(length, dtype=np.int32), ones.shape).copy()}


def memory_mib(field: str = "VmHWM") -> float:
    """This process's peak (VmHWM) or current (VmRSS) resident set, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / MIB
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB


def run_queue_wait_s() -> float:
    """Seconds this process's threads have spent ready to run but waiting for a
    core (the second field of each /proc/self/task/*/schedstat): on a shared
    machine, how much of the wall clock other work took from this process."""
    total = 0
    for path in Path("/proc/self/task").glob("*/schedstat"):
        try:
            total += int(path.read_text().split()[1])
        except (OSError, IndexError, ValueError):
            pass  # a thread that ended meanwhile
    return total / 1e9


def threads() -> int:
    return len(os.sched_getaffinity(0))


# --- ours -------------------------------------------------------------------------------

def ours_train(args, lora: bool) -> dict:
    import flax.linen as nn
    import jax

    from codeio_jax.models import convert
    from codeio_jax.models.config import LoraConfig
    from codeio_jax.training import hardware, trainer
    from codeio_jax.training.input import to_global
    from codeio_jax.training.optimizer import OptimizerConfig
    from codeio_jax.training.partitioning import MeshConfig
    from codeio_jax.training.step import init_state

    config, params = convert.load_hf(args.folder)
    loaded_mib = memory_mib()
    optimizer = OptimizerConfig(learning_rate=LEARNING_RATE, warmup_steps=0, schedule="constant", b1=BETAS[0],
                                b2=BETAS[1], eps=EPS, weight_decay=WEIGHT_DECAY, clip_norm=0.0)
    adapters = LoraConfig(targets=("all-linear",), rank=LORA_RANK, alpha=LORA_ALPHA) if lora else None
    setup = trainer.build_step(config, MeshConfig(), optimizer, 1000, compute_dtype="float32", remat="full",
                               scan_layers=True, loss_chunk_length=LOSS_CHUNK, devices=jax.devices()[:1],
                               lora=adapters)
    data = batches(config.vocab_size, args.batch, args.length)
    with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
        if lora:
            frozen = jax.device_put(params, setup.frozen_shardings)
            state = jax.jit(lambda: init_state(setup.config, setup.optimizer, 0),
                            out_shardings=setup.state_shardings)()
        else:
            frozen = None
            state = trainer.fresh_state(params, setup.optimizer, 0, setup.state_shardings)
        del params
        trained = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
        batch = to_global(next(data), setup.batch_sharding)
        started = time.perf_counter()
        step_fn = setup.step_fn.lower(state, batch, frozen).compile()
        compile_s = time.perf_counter() - started
        hardware.return_freed_memory_to_the_system()  # as the trainer does on a CPU host
        losses, times, waited = [], [], 0.0
        for i in range(args.steps + 1):  # step 0: warm-up
            wait, started = run_queue_wait_s(), time.perf_counter()
            state, metrics = step_fn(state, batch, frozen)
            loss = float(metrics["loss"])  # waits for the step
            if i:
                times.append(time.perf_counter() - started)
                waited += run_queue_wait_s() - wait
            losses.append(loss)
            batch = to_global(next(data), setup.batch_sharding)
    return dict(step_s=statistics.median(times), times=times, compile_s=compile_s, losses=losses,
                trained=int(trained), loaded_mib=loaded_mib, waited_s=waited)


def ours_decode(args, prompts: list[list[int]]) -> dict:
    from codeio_jax.models import convert
    from codeio_jax.sampling import Sampler

    config, params = convert.load_hf(args.folder)
    loaded_mib = memory_mib()
    sampler = Sampler(config, params)
    started = time.perf_counter()
    sampler.generate(prompts, args.new)
    compile_s = time.perf_counter() - started
    sampler.generate(prompts, args.new)  # warm-up
    times, wait = [], run_queue_wait_s()
    for _ in range(args.runs):
        started = time.perf_counter()
        out = sampler.generate(prompts, args.new)
        times.append(time.perf_counter() - started)
    return dict(call_s=min(times), times=times, compile_s=compile_s, tokens=[list(map(int, c.tokens)) for c in out],
                loaded_mib=loaded_mib, waited_s=run_queue_wait_s() - wait)


# --- transformers + torch ---------------------------------------------------------------

def torch_model(folder):
    import warnings

    import torch
    import transformers as tr

    warnings.filterwarnings("ignore", category=FutureWarning)  # peft calls a renamed transformers method
    tr.utils.logging.set_verbosity_error()
    tr.utils.logging.disable_progress_bar()
    torch.set_num_threads(threads())
    return tr.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


def torch_train(args, lora: bool) -> dict:
    import torch

    model = torch_model(args.folder)
    loaded_mib = memory_mib()
    if lora:
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA,
                                                           target_modules="all-linear", lora_dropout=0.0))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=LEARNING_RATE, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    data = batches(model.config.vocab_size, args.batch, args.length)
    losses, times, waited = [], [], 0.0
    for i in range(args.steps + 1):  # step 0: warm-up (first-step allocations, AdamW's slots)
        arrays = next(data)
        inputs = torch.from_numpy(arrays["decoder_input_tokens"].astype(np.int64))
        labels = torch.from_numpy(arrays["decoder_target_tokens"].astype(np.int64))
        wait, started = run_queue_wait_s(), time.perf_counter()
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - started)
            waited += run_queue_wait_s() - wait
        losses.append(float(loss.detach()))
        del logits, loss
    return dict(step_s=statistics.median(times), times=times, losses=losses,
                trained=int(sum(p.numel() for p in trainable)), loaded_mib=loaded_mib, waited_s=waited)


def torch_decode(args, prompts: list[list[int]]) -> dict:
    import torch

    model = torch_model(args.folder).eval()
    loaded_mib = memory_mib()
    model.generation_config.eos_token_id = None  # every row runs the full length, as ours
    model.generation_config.pad_token_id = 0
    ids = torch.tensor(prompts)

    def generate():
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=args.new, min_new_tokens=args.new)
        return out[:, ids.shape[1]:].tolist()

    generate()  # warm-up
    times, wait = [], run_queue_wait_s()
    for _ in range(args.runs):
        started = time.perf_counter()
        tokens = generate()
        times.append(time.perf_counter() - started)
    return dict(call_s=min(times), times=times, tokens=tokens, loaded_mib=loaded_mib,
                waited_s=run_queue_wait_s() - wait)


def child(args) -> None:
    if args.cores:  # before jax or torch start their thread pools, which size themselves by the affinity
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cores])
    if args.side == "ours":
        from codeio_jax.training import hardware

        hardware.skip_tpu_probe_without_a_tpu()
        hardware.prefer_memory_scheduler_on_cpu()  # before jax starts, as `codeio-jax train` does
    prompts = json.loads(Path(args.prompts).read_text()) if args.case == "decode" else None
    run = {("full", "ours"): lambda: ours_train(args, False), ("lora", "ours"): lambda: ours_train(args, True),
           ("decode", "ours"): lambda: ours_decode(args, prompts),
           ("full", "torch"): lambda: torch_train(args, False), ("lora", "torch"): lambda: torch_train(args, True),
           ("decode", "torch"): lambda: torch_decode(args, prompts)}[args.case, args.side]
    result = run()
    result["peak_mib"] = memory_mib()
    result["load_1min"] = os.getloadavg()[0]
    Path(args.out).write_text(json.dumps(result))


# --- the parent: convert, run the children, report --------------------------------------

@contextlib.contextmanager
def converted_smollm2(prefix: str):
    """(a scratch folder, the real GGUF converted into a Hugging Face folder inside
    it, the model's config); the scratch folder is removed afterwards."""
    if not SMOLLM2.exists():
        sys.exit(f"{SMOLLM2} is absent: `make {SMOLLM2.relative_to(ROOT)}` fetches it")
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        from codeio_jax.models import gguf

        started = time.perf_counter()
        folder = work / "hf"
        model = gguf.open_gguf(SMOLLM2)
        gguf.write_hf(model, folder)
        print(f"converted {SMOLLM2.name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        yield work, folder, model.config
    finally:
        shutil.rmtree(work, ignore_errors=True)


def decode_prompts(folder: Path, batch: int, length: int, vocab: int) -> tuple[list[list[int]], str]:
    if CRUXEVAL.exists():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        rows = []
        for line in CRUXEVAL.read_text().splitlines():
            ids = tokenizer.encode(json.loads(line)["code"]).ids
            if len(ids) >= length:
                rows.append(ids[:length])
            if len(rows) == batch:
                return rows, f"the first {batch} CRUXEval programs of at least {length} tokens, cut to {length}"
    rows = np.random.RandomState(0).randint(3, vocab, (batch, length)).tolist()
    return rows, "random tokens (the CRUXEval data set is absent)"


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    memory = next((int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:")), 0)
    return dict(cpus=os.cpu_count(), usable=threads(), model=cpu, memory_gib=memory / (1 << 30))


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    names = []
    for name in ("jax", "jaxlib", "flax", "optax", "torch", "transformers", "peft", "numpy"):
        try:
            names.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return f"Python {platform.python_version()}, " + ", ".join(names)


def run_child(args, case: str, side: str, folder: Path, prompts: Path, work: Path) -> dict:
    out = work / f"{case}-{side}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--only", case, "--side", side, "--folder", str(folder),
               "--out", str(out), "--prompts", str(prompts), "--batch", str(args.batch), "--length", str(args.length),
               "--steps", str(args.steps), "--new", str(args.new), "--runs", str(args.runs),
               "--cores", str(args.cores)]
    return child_result(command, out, f"{case} / {side}")


def child_result(command: list[str], out: Path, label: str) -> dict:
    """Run one child (its output to stderr) and read the JSON it wrote to `out`, with its wall time."""
    started = time.perf_counter()
    print(f"[{label}] ...", file=sys.stderr, flush=True)
    subprocess.run(command, check=True, stdout=sys.stderr)
    result = json.loads(out.read_text())
    result["wall_s"] = time.perf_counter() - started
    print(f"[{label}] done in {result['wall_s']:.0f} s", file=sys.stderr, flush=True)
    return result


def agreement(ours: list[list[int]], theirs: list[list[int]]) -> dict:
    prefixes = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                for a, b in zip(ours, theirs)]
    return dict(rows=sum(a == b for a, b in zip(ours, theirs)), prefixes=prefixes,
                positional=sum(x == y for a, b in zip(ours, theirs) for x, y in zip(a, b)))


def report(args, results: dict, started_load, ended_load, wall_s: float, prompt_source: str) -> str:
    m = machine()
    train_tokens = args.batch * args.length
    decode_tokens = args.decode_batch * args.new
    labels = {"full": f"train step, full fine-tuning ({args.batch} x {args.length})",
              "lora": f"train step, LoRA r{LORA_RANK} all-linear ({args.batch} x {args.length})",
              "decode": f"greedy decoding (batch {args.decode_batch}, {args.prompt} + {args.new})"}
    lines = ["SmolLM2-135M-Instruct (real weights: the Q4_1 GGUF dequantised to float32 by codeio_jax.models.gguf), "
             "float32 on CPU, ours against transformers + torch in the same run, each side in its own process", "",
             "| case | ours tokens/s | torch tokens/s | ratio (ours / torch) | ours peak MiB | torch peak MiB |",
             "|---|---|---|---|---|---|"]
    for case in CASES:
        ours, theirs = results[case]["ours"], results[case]["torch"]
        if case == "decode":
            speed = decode_tokens / ours["call_s"], decode_tokens / theirs["call_s"]
        else:
            speed = train_tokens / ours["step_s"], train_tokens / theirs["step_s"]
        lines.append(f"| {labels[case]} | {speed[0]:,.1f} | {speed[1]:,.1f} | {speed[0] / speed[1]:.2f}x | "
                     f"{ours['peak_mib']:,.0f} | {theirs['peak_mib']:,.0f} |")
    lines += ["", "| case | side | step or call s (each timed) | compile / 1st call s | losses (warm-up first) | "
              "trained parameters | MiB after loading | run-queue wait / timed s | load at end | child wall s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for case in CASES:
        for side in SIDES:
            r = results[case][side]
            timed = ", ".join(f"{t:.2f}" for t in r["times"])
            losses = ", ".join(f"{x:.4f}" for x in r.get("losses", [])) or "-"
            trained = f"{r['trained']:,}" if "trained" in r else "-"
            compile_s = f"{r['compile_s']:.1f}" if "compile_s" in r else "-"
            lines.append(f"| {case} | {side} | {timed} | {compile_s} | {losses} | {trained} | "
                         f"{r['loaded_mib']:,.0f} | {r['waited_s'] / sum(r['times']):.2f} | {r['load_1min']:.2f} | "
                         f"{r['wall_s']:.0f} |")
    agree = agreement(results["decode"]["ours"]["tokens"], results["decode"]["torch"]["tokens"])
    total = args.decode_batch * args.new
    lines += ["", f"greedy tokens: {agree['rows']} of {args.decode_batch} rows equal throughout; agreeing prefixes "
              f"{sum(agree['prefixes']):,} of {total:,} tokens ({100 * sum(agree['prefixes']) / total:.1f}%; per row "
              f"{', '.join(map(str, agree['prefixes']))} of {args.new}); equal at the same position "
              f"{agree['positional']:,} of {total:,} ({100 * agree['positional'] / total:.1f}%)",
              f"decode prompts: {prompt_source}", ""]
    for case in ("full", "lora"):
        first = abs(results[case]["ours"]["losses"][0] - results[case]["torch"]["losses"][0])
        lines.append(f"{case}: first-step loss, ours - torch (same weights, same batch): {first:.2e}")
    lines += [
        "",
        "Tokens/s: batch x length / median step time after one warm-up step (ours: after compiling, reported "
        "apart); decoding: batch x new tokens / best call after a warm-up call (prefill included). Peak MiB: "
        "the child process's VmHWM at its end (imports, model load, compile and run included); 'MiB after "
        "loading': its VmHWM once the model is loaded. Ours: trainer.build_step, float32, remat full, "
        f"scanned layers, loss {LOSS_CHUNK} positions at a time, XLA:CPU's memory scheduler (as `codeio-jax "
        "train`); torch: no gradient checkpointing, eager, sdpa attention. AdamW lr 1e-4, betas (0.9, 0.999), "
        "weight decay 0.01, no clipping, on both. Run-queue wait / timed s: the seconds the child's threads "
        "spent ready but waiting for a core (/proc schedstat, all threads summed) per second of the timed "
        "part: near 0 on an idle machine, up to about the thread count when other work holds the cores. "
        "Load at end: the 1-minute load average when the child finished.",
        "",
        f"machine: {m['cpus']} CPUs ({m['usable']} usable), {m['model']}, {m['memory_gib']:.0f} GiB; each side "
        + (f"pinned to {args.cores} core{'s' if args.cores > 1 else ''} (torch {args.cores} thread"
           f"{'s' if args.cores > 1 else ''})" if args.cores else f"on every usable core (torch {m['usable']} threads)")
        + ("; shared with another engineer's work during this run, so either side's figures may carry "
           "their load" if args.shared else ""),
        f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in started_load)} before, "
        f"{' '.join(f'{x:.2f}' for x in ended_load)} after; whole run {wall_s / 60:.1f} min",
        f"versions: {versions()}",
        f"command: {args.command}",
    ]
    return "\n".join(line.rstrip() for line in lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2, help="train batch rows")
    parser.add_argument("--length", type=int, default=512, help="train sequence length")
    parser.add_argument("--steps", type=int, default=3, help="timed train steps per side, after one warm-up")
    parser.add_argument("--decode-batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=64, help="decode prompt tokens")
    parser.add_argument("--new", type=int, default=128, help="decode new tokens")
    parser.add_argument("--runs", type=int, default=3, help="timed decode calls per side, after one warm-up")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ",".join(CASES))
    parser.add_argument("--cores", type=int, default=0,
                        help="pin each child to this many of the usable cores, torch using as many threads "
                             "(default 0: every usable core)")
    parser.add_argument("--shared", action="store_true", help="the machine is shared: say so in the results")
    parser.add_argument("--results", type=Path, default=RESULTS)
    # a child's arguments
    parser.add_argument("--only", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--prompts", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        args.case = args.only
        child(args)
        return 0

    args.command = shlex.join([".venv/bin/python", os.path.relpath(__file__, ROOT)] + sys.argv[1:])
    cases = [c for c in args.cases.split(",") if c]
    started_load, started = os.getloadavg(), time.perf_counter()
    with converted_smollm2("bench-smollm2-") as (work, folder, config):
        prompts, prompt_source = decode_prompts(folder, args.decode_batch, args.prompt, config.vocab_size)
        prompts_file = work / "prompts.json"
        prompts_file.write_text(json.dumps(prompts))
        results = {case: {side: run_child(args, case, side, folder, prompts_file, work) for side in SIDES}
                   for case in cases}
    if cases != list(CASES):
        print(json.dumps({c: {s: {k: v for k, v in r.items() if k != "tokens"} for s, r in sides.items()}
                          for c, sides in results.items()}, indent=1))
        return 0
    text = report(args, results, started_load, os.getloadavg(), time.perf_counter() - started, prompt_source)
    print(text)
    args.results.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
