"""Every paper recipe compiled for its slices: does it fit, with what headroom,
and what does XLA's cost model expect of it? (No TPU needed: libtpu describes
the slice on this host; `codeio-jax train --compile_only`, the command a user runs.)

For each model of the paper and each slice it has a file for in gin/slices/, the
stage-1 recipe (gin/train/stage1_codeio.gin: sequence 4096, global batch 1024 as
32 rows x 32 micro-batches, bf16 over f32 master weights, AdamW) is compiled with
the slice file's own settings (attention auto: splash on TPU) and, on the v5p
slice, with XLA's attention too (and, for DeepSeek-V2-Lite, with the dense MoE
reference beside the dropless default). Printed: per-chip GiB from XLA's memory analysis, against the
chip's capacity (codeio_jax/training/hardware.py); XLA's flops against the model's
count (ours, active experts only); the estimated step time and MFU, which come
from XLA's cost model and are estimates, not measurements.

Each compile of a 7B-27B step takes minutes on 2 cores.
Run: .venv/bin/python benchmarks/compile_paper_recipes.py [--only qwen2_5_coder_7b] [--out runs/compile.json]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeio_jax.training import hardware  # noqa: E402
from codeio_jax.training.compile_check import credible_estimates  # noqa: E402

MODELS = ("qwen2_5_coder_7b", "llama3_1_8b", "deepseek_v2_lite", "gemma2_27b")
GIB = 1 << 30


def variants(model: str, topology: str):
    """The slice file as it is (attention auto: splash on TPU); on the v5p slice also
    with XLA's attention, DeepSeek-V2-Lite with the dense MoE reference, and Gemma 2
    (vocabulary 256,000) with the whole-sequence loss instead of the chunked one."""
    yield {"attention": "auto"}
    if topology.startswith("v5p"):
        yield {"attention": "xla"}
        if model == "deepseek_v2_lite":
            yield {"attention": "auto", "moe": "dense"}
        if model == "gemma2_27b":
            yield {"attention": "auto", "loss_chunk": 0}


def compile_one(slice_file: Path, topology: str, variant: dict, out: Path) -> tuple[int, dict | None, str]:
    command = [sys.executable, "-m", "codeio_jax.cli", "train", "--gin_file", "train/stage1_codeio.gin",
               "--gin_file", f"slices/{slice_file.name}", f"--gin.train.attention_impl='{variant['attention']}'",
               "--compile_only", "--topology", topology, "--json", str(out)]
    if "moe" in variant:
        command.append(f"--gin.train.moe_impl='{variant['moe']}'")
    if "loss_chunk" in variant:
        command.append(f"--gin.train.loss_chunk_length={variant['loss_chunk']}")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    report = json.loads(out.read_text()) if done.returncode in (0, 3) and out.exists() else None
    return done.returncode, report, done.stderr[-2000:]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], help="a model (repeatable); default: all four")
    parser.add_argument("--out", type=Path, default=None, help="write every report here as JSON")
    parser.add_argument("--jobs", type=int, default=1, help="compiles at once")
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep each report in this folder and reuse it on the next run (a long run resumes)")
    parser.add_argument("--cached_only", action="store_true",
                        help="with --cache: print the table of what is cached, compile nothing")
    args = parser.parse_args()
    plan = [(model, slice_file, slice_file.name[len(model) + 1:-len(".gin")], variant)
            for model in args.only or MODELS
            for slice_file in sorted((ROOT / "gin" / "slices").glob(f"{model}.*.gin"))
            for variant in variants(model, slice_file.name[len(model) + 1:-len(".gin")])]
    # Every slice file as launched first, the comparison variants after: a run cut short still says
    # whether each recipe fits.
    plan.sort(key=lambda item: item[3] != {"attention": "auto"})

    def run(item):
        model, slice_file, topology, variant = item
        label = f"{model} {topology} " + " ".join(f"{k} {v}" for k, v in variant.items())
        cached = args.cache / (label.replace(" ", "_") + ".json") if args.cache else None
        if cached and cached.exists():
            return model, topology, variant, json.loads(cached.read_text())
        if args.cached_only:
            return model, topology, variant, None
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            code, report, stderr = compile_one(slice_file, topology, variant, Path(tmp) / "report.json")
        if report is None:
            print(f"{label}: FAILED (exit {code})\n{stderr}", file=sys.stderr, flush=True)
        else:
            print(f"{label}: {report['per_chip_bytes']['total'] / GIB:.1f} GiB per chip, compiled in "
                  f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
            if cached:
                cached.write_text(json.dumps(report))
        return model, topology, variant, report

    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)
    # Each compile is mostly one thread: --jobs 2 keeps both cores of this machine busy.
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run, plan))
    order = {model: i for i, model in enumerate(MODELS)}
    rows.sort(key=lambda row: (order[row[0]], row[1], row[2] != {"attention": "auto"}))
    reports = [{"model": m, "slice": t, **v, "report": r} for m, t, v, r in rows if r is not None]
    print("\n| model | slice (chips) | mesh | remat | attention | MoE | loss chunk | per-chip GiB | of GiB | headroom "
          "| XLA / model FLOPs | estimated step s | estimated MFU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model, topology, variant, report in rows:
        if report is None:
            state = "not compiled" if args.cached_only else "failed"
            print(f"| {model} | {topology} | | | {variant['attention']} | {variant.get('moe', '')} | | {state} |"
                  " | | | | |")
            continue
        mesh = " ".join(f"{axis[0]}{size}" for axis, size in report["mesh"].items() if size > 1) or "1"
        settings = report["settings"]
        moe = settings.get("moe_impl") or ""
        ratio = (f"{report['xla_flops_per_step'] / report['model_flops_per_step']:.2f}"
                 if report["xla_flops_per_step"] else "n/a")
        step_s, mfu, _ = credible_estimates(report["estimated_step_s"], report["xla_flops_per_step"],
                                            report["model_flops_per_step"], report["chips"],
                                            hardware.chip_for_device_kind(report["device_kind"]).peak_bf16_flops)
        step = f"{step_s:.2f}" if step_s else "n/a"
        mfu = f"{100 * mfu:.0f}%" if mfu else "n/a"
        attention = settings.get("attention_kernel", settings["attention_impl"])
        print(f"| {model} | {topology} ({report['chips']}) | {mesh} | {settings['remat']} | "
              f"{attention} | {moe} | {settings['loss_chunk_length'] or 'whole'} | "
              f"{report['per_chip_bytes']['total'] / GIB:.1f} | "
              f"{report['hbm_bytes'] / GIB:.1f} | {100 * report['headroom']:.0f}% | {ratio} | {step} | {mfu} |")
    print("\nper-chip GiB: XLA's memory analysis of the compiled step (arguments + outputs - aliased + temporaries "
          "+ code); estimated step s and MFU: XLA's cost model (an estimate), n/a where XLA counts under 90% of the "
          "model's FLOPs (it does not see inside splash and megablox kernels and counts a loop body once); mesh: "
          "d data, f fsdp, e experts, t tensor.")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(reports, indent=2) + "\n")


if __name__ == "__main__":
    main()
