"""GRPO rollout speed: G sampled completions per prompt from our KV-cache sampler
(the path `codeio-jax rl` takes: rl/rollout.sample_groups over sampling.ChatModel)
against transformers' generate (num_return_sequences=G), on the same model, the
same prompts and the same group size, float32 on CPU, in the same run.

The model: SmolLM2-135M-Instruct, the real GGUF the Makefile fetches, converted
once into a temporary Hugging Face folder (models/gguf.py); both sides load it.
The prompts: the first --prompts CRUXEval output-prediction prompts of the RL
source (rl/benchmark_prompts.cruxeval_prompts), rendered with the folder's own
chat template, as `codeio-jax rl` asks them. They differ in length: ours takes
ragged rows; transformers gets them left-padded with an attention mask.

Sampling on both sides: temperature --temperature, top-p --top-p, no top-k,
every row exactly --new tokens (no stop token: the end tokens are switched off
on both sides, so both generate the same number of tokens and the ratio is the
speed, not the luck of when a sample stops). Tokens/s = prompts x G x new
tokens / call seconds (prefill included), best of --runs timed calls after one
warm-up call (ours: after a first call that compiles, reported apart). Ours
prefills each prompt once for its whole group; transformers' generate repeats
the prompt G times first (num_return_sequences), so its prefill costs G times
as much: that is a difference of the samplers, and the report says so.

Checked, before any timing counts: both sides load the same model (the greedy
continuation of the first prompt, --check tokens, equal token for token), and
our rollouts are valid groups (G completions per prompt, distinct seeds giving
distinct completions, the same again for the same seed).

Each side runs in its own child process (this script with --side), pinned to
--cores cores when asked (torch with as many threads), reporting its peak
resident memory (VmHWM) and the seconds its threads waited for a core.

Writes benchmarks/results/rl_rollout.md.
Run:   .venv/bin/python benchmarks/rl_rollout.py
Smoke: .venv/bin/python benchmarks/rl_rollout.py --prompts 1 --group 2 --new 4 --runs 1 --check 4 \\
           --results /tmp/rl_rollout.md
"""

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smollm2_speed import (child_result, converted_smollm2, machine, memory_mib, run_queue_wait_s, torch_model,  # noqa: E402
                           versions)

RESULTS = ROOT / "benchmarks" / "results" / "rl_rollout.md"
SIDES = ("ours", "torch")


# --- ours -------------------------------------------------------------------------------

def ours(args, work: dict) -> dict:
    from codeio_jax.models import convert
    from codeio_jax.rl import rollout
    from codeio_jax.rl.prompts import RLPrompt
    from codeio_jax.sampling.chat import ChatModel
    from codeio_jax.sampling.sampler import Sampler, SamplingParams

    config, params = convert.load_hf(args.folder)
    loaded_mib = memory_mib()
    chat = ChatModel.with_folder_chat(Sampler(config, params), args.folder)
    # No end token: every row runs the full length, as transformers' do here.
    chat = ChatModel(chat.sampler, chat.tokenizer, chat.family, (), chat.template)
    prompts = [RLPrompt(f"p{i}/output_prediction/0", "output_prediction", (), None) for i in range(len(work["ids"]))]
    ids = [tuple(row) for row in work["ids"]]
    sampling = SamplingParams(max_new_tokens=args.new, temperature=args.temperature, top_p=args.top_p)

    def call(step):
        return rollout.sample_groups(chat, prompts, ids, args.group, sampling, 0, step)

    greedy = chat.sampler.generate([list(ids[0])], args.check)[0].tokens
    started = time.perf_counter()
    first = call(0)
    compile_s = time.perf_counter() - started
    again = call(0)
    times, wait = [], run_queue_wait_s()
    for run in range(args.runs):
        started = time.perf_counter()
        groups = call(run + 1)
        times.append(time.perf_counter() - started)
    lengths = [len(c.tokens) for group in groups for c in group]
    distinct = [len({c.tokens for c in group}) for group in first]
    return dict(call_s=min(times), times=times, compile_s=compile_s, greedy=list(map(int, greedy)),
                rows=len(lengths), lengths=sorted(set(lengths)), distinct=distinct,
                repeatable=[[c.tokens for c in g] for g in first] == [[c.tokens for c in g] for g in again],
                loaded_mib=loaded_mib, waited_s=run_queue_wait_s() - wait)


# --- transformers + torch ---------------------------------------------------------------

def theirs(args, work: dict) -> dict:
    import torch

    model = torch_model(args.folder).eval()
    loaded_mib = memory_mib()
    model.generation_config.eos_token_id = None  # every row runs the full length, as ours
    pad = work["pad_id"]
    model.generation_config.pad_token_id = pad
    width = max(len(row) for row in work["ids"])
    ids = torch.tensor([[pad] * (width - len(row)) + row for row in work["ids"]])
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in work["ids"]])
    with torch.no_grad():
        first = torch.tensor([work["ids"][0]])
        greedy = model.generate(first, attention_mask=torch.ones_like(first), do_sample=False,
                                max_new_tokens=args.check, min_new_tokens=args.check)[0, first.shape[1]:].tolist()

    def generate(seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            out = model.generate(ids, attention_mask=mask, do_sample=True, temperature=args.temperature,
                                 top_p=args.top_p, top_k=0, num_return_sequences=args.group,
                                 max_new_tokens=args.new, min_new_tokens=args.new)
        return out[:, width:]

    generate(0)  # warm-up
    times, wait = [], run_queue_wait_s()
    for run in range(args.runs):
        started = time.perf_counter()
        out = generate(run + 1)
        times.append(time.perf_counter() - started)
    return dict(call_s=min(times), times=times, greedy=greedy, rows=int(out.shape[0]),
                lengths=[int(out.shape[1])], loaded_mib=loaded_mib, waited_s=run_queue_wait_s() - wait)


def child(args) -> None:
    if args.cores:  # before jax or torch start their thread pools, which size themselves by the affinity
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cores])
    if args.side == "ours":
        from codeio_jax.training import hardware

        hardware.skip_tpu_probe_without_a_tpu()
    work = json.loads(Path(args.work).read_text())
    result = (ours if args.side == "ours" else theirs)(args, work)
    result["peak_mib"] = memory_mib()
    Path(args.out).write_text(json.dumps(result))


# --- the parent: convert, render the prompts, run the children, report -----------------------

def rendered_prompts(folder: Path, count: int) -> tuple[list[list[int]], int]:
    """The first `count` CRUXEval output-prediction RL prompts as the folder's chat
    template and tokenizer render them, and the tokenizer's padding id."""
    from codeio_jax.models.chat_template import FolderChatTemplate
    from codeio_jax.rl.benchmark_prompts import cruxeval_prompts
    from codeio_jax.sampling.chat import load_tokenizer

    tokenizer = load_tokenizer(folder)
    template = FolderChatTemplate.from_folder(folder)
    prompts = cruxeval_prompts(tasks=("output_prediction",), limit=count).prompts
    ids = [tokenizer.encode(template.render(list(p.messages), add_generation_prompt=True),
                            add_special_tokens=False).ids for p in prompts]
    pad = tokenizer.token_to_id("<|endoftext|>") or 0
    return ids, pad


def run_child(args, side: str, folder: Path, work_file: Path, work: Path) -> dict:
    out = work / f"{side}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--folder", str(folder),
               "--work", str(work_file), "--out", str(out), "--group", str(args.group), "--new", str(args.new),
               "--runs", str(args.runs), "--check", str(args.check), "--temperature", str(args.temperature),
               "--top-p", str(args.top_p), "--cores", str(args.cores)]
    return child_result(command, out, side)


def report(args, results: dict, prompt_lengths: list[int], load: tuple, wall_s: float) -> str:
    ours_r, torch_r = results["ours"], results["torch"]
    tokens = len(prompt_lengths) * args.group * args.new
    rate = {side: tokens / r["call_s"] for side, r in results.items()}
    m = machine()
    pinned = f"each side pinned to {args.cores} core(s) (torch {args.cores} thread(s))" if args.cores else \
        "each side on every usable core"
    lines = [
        f"GRPO rollouts on SmolLM2-135M-Instruct (real weights: the Q4_1 GGUF dequantised to float32), "
        f"{len(prompt_lengths)} prompts x G = {args.group} completions x {args.new} new tokens, temperature "
        f"{args.temperature}, top-p {args.top_p}, float32 on CPU; ours (rl/rollout.sample_groups) against "
        "transformers' generate (num_return_sequences), each side in its own process, same run",
        "",
        "| side | tokens/s | ratio (ours / transformers) | best call s | timed calls s | compile / 1st call s | "
        "peak MiB | run-queue wait s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for side, name in (("ours", "ours (KV-cache sampler)"), ("torch", "transformers generate")):
        r = results[side]
        compiled = f"{r['compile_s']:.1f}" if "compile_s" in r else "-"
        lines.append(f"| {name} | {rate[side]:,.1f} | {rate[side] / rate['torch']:.2f}x | {r['call_s']:.2f} | "
                     f"{', '.join(f'{t:.2f}' for t in r['times'])} | {compiled} | {r['peak_mib']:,.0f} | "
                     f"{r['waited_s']:.2f} |")
    same = ours_r["greedy"] == torch_r["greedy"]
    lines += [
        "",
        f"same model on both sides: the greedy continuation of the first prompt, {args.check} tokens, "
        f"{'equal token for token' if same else 'DIFFERENT'}",
        f"our groups: {ours_r['rows']} rows of {ours_r['lengths']} tokens; distinct completions per group "
        f"(first call) {ours_r['distinct']} of {args.group}; the same seeds gave the same completions: "
        f"{ours_r['repeatable']}",
        f"prompt lengths (tokens): {prompt_lengths}",
        "",
        "Tokens/s: prompts x G x new tokens per call (no stop token on either side), the best of the timed calls "
        "after a warm-up call (ours: after the first call, which compiles); prefill included. The work differs "
        "there: ours prefills each distinct prompt once and starts its G rows from copies of that cache "
        "(sampling/decode.py), and runs the output layer on the prompt's last position only; transformers' "
        "generate repeats each prompt G times before its prefill. Peak MiB: the child "
        "process's VmHWM at its end (imports, model load, compile and run included). Run-queue wait: seconds the "
        "child's threads were ready but waiting for a core during the timed calls (near 0 on an idle machine).",
        "",
        f"machine: {m['cpus']} CPUs ({m['usable']} usable), {m['model']}, {m['memory_gib']:.0f} GiB; {pinned}",
        f"load average (1, 5, 15 min) at the start: {' '.join(f'{x:.2f}' for x in load)}; whole run "
        f"{wall_s / 60:.1f} min",
        f"versions: {versions()}",
        f"command: {args.command}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=4, help="CRUXEval prompts per call")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (GRPO's G)")
    parser.add_argument("--new", type=int, default=64, help="new tokens per completion")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3, help="timed calls per side, after one warm-up")
    parser.add_argument("--check", type=int, default=16, help="greedy tokens compared across the sides")
    parser.add_argument("--cores", type=int, default=0, help="pin each child to this many cores (0: all usable)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args)
        return 0
    args.command = shlex.join([".venv/bin/python", os.path.relpath(__file__, ROOT)] + sys.argv[1:])
    load, started = os.getloadavg(), time.perf_counter()
    with converted_smollm2("bench-rl-rollout-") as (work, folder, _):
        ids, pad = rendered_prompts(folder, args.prompts)
        work_file = work / "prompts.json"
        work_file.write_text(json.dumps({"ids": ids, "pad_id": pad}))
        results = {side: run_child(args, side, folder, work_file, work) for side in SIDES}
    text = report(args, results, [len(row) for row in ids], load, time.perf_counter() - started)
    print(text)
    args.results.write_text(text + "\n")
    ok = results["ours"]["greedy"] == results["torch"]["greedy"] and results["ours"]["repeatable"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
