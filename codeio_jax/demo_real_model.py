"""The demo's real-model half (codeio_jax/demo.py, steps 3 to 6): SmolLM2-135M-Instruct
from its GGUF file, its CRUXEval baseline, CodeI/O++ with it answering turn 1, a
short LoRA fine-tune on those examples, and the evaluation again.

Every step goes through the project's own parts: `models.gguf` converts, the
local teacher (our sampler, the folder's chat template) answers, the sandbox
scores, the pipeline makes the data, the SeqIO tasks render it in the model's
chat template, `train` with `train.lora` fine-tunes, `checkpoint.load` merges.
Sizes are small enough for 2 CPU cores; the numbers are what they are.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

# The fixed CRUXEval slice: the first samples by id, for both modes.
SLICE = 16
# Records of the embedded corpus whose prompts the model answers (one per task each).
RECORDS = 10
EVAL_NEW_TOKENS = 128
PIPELINE_NEW_TOKENS = 128


def run(gguf_file: Path, demo_dir: Path, started: float) -> None:
    from codeio_jax.experiments.model_folders import merged_hf_folder

    base_hf, base_ckpt = _import(gguf_file, demo_dir)
    before = _cruxeval_slice(base_hf, "SmolLM2-135M-Instruct")
    pp = _codeio_pp(base_hf, demo_dir)
    run_dir, rows = _lora(base_ckpt, base_hf, pp["work"], demo_dir)
    tuned_hf = merged_hf_folder(run_dir, base_hf, demo_dir / "smollm2_lora_hf")
    after = _cruxeval_slice(tuned_hf, "after the LoRA fine-tune")
    _report(demo_dir, before, after, pp, rows, time.perf_counter() - started)


def _import(gguf_file: Path, demo_dir: Path) -> tuple[Path, Path]:
    """The GGUF as a Hugging Face folder and as our checkpoint (made once, then reused)."""
    from codeio_jax.experiments.model_folders import checkpoint_of
    from codeio_jax.models import convert, gguf

    hf, ckpt = demo_dir / "smollm2_hf", demo_dir / "smollm2_jax"
    t = time.perf_counter()
    if not (hf / "config.json").exists():
        shutil.rmtree(hf, ignore_errors=True)
        gguf.write_hf(gguf.open_gguf(gguf_file, dtype="float32"), hf)
    checkpoint_of(hf, ckpt)
    config = convert.read_config(hf)
    print(f"SmolLM2-135M-Instruct ({gguf_file.name}): {config.num_layers} layers, hidden {config.hidden_size}, "
          f"vocabulary {config.vocab_size}; Hugging Face folder {hf}, checkpoint {ckpt} "
          f"({time.perf_counter() - t:.0f} s)")
    return hf, ckpt


def _cruxeval_slice(folder: Path, label: str):
    from codeio_jax.experiments.cruxeval_eval import evaluate_cruxeval

    result = evaluate_cruxeval(folder, SLICE, EVAL_NEW_TOKENS)
    print(f"{label}: CRUXEval-O {result.scores['CRUXEval-O']:.1f}, CRUXEval-I {result.scores['CRUXEval-I']:.1f} "
          f"pass@1 on the first {SLICE} samples each ({result.completion_tokens} tokens generated, "
          f"{result.seconds:.0f} s)", flush=True)
    return result


def _codeio_pp(model: Path, demo_dir: Path) -> dict:
    """The pipeline over the first RECORDS records with the model on turn 1 and
    the trace teacher revising what the verifier rejects."""
    from codeio_jax.data.ios import DEFAULT_CORPUS
    from codeio_jax.data.pipeline import LocalTeacherSpec, TraceTeacherSpec, run_pipeline

    source = demo_dir / "smollm2_pp_source.jsonl"
    lines = Path(DEFAULT_CORPUS).read_text(encoding="utf-8").splitlines(keepends=True)
    source.write_text("".join(lines[:RECORDS]), encoding="utf-8")
    work = demo_dir / "smollm2_pp"
    shutil.rmtree(work, ignore_errors=True)
    t = time.perf_counter()
    report = run_pipeline(work_dir=work, source=source, per_task=1, rounds=1, turn_teachers=[
        LocalTeacherSpec(model=str(model), max_new_tokens=PIPELINE_NEW_TOKENS), TraceTeacherSpec()])
    examples = [json.loads(line) for line in report.examples.read_text().splitlines()]
    first = sum(e["turns"] == 1 and e["status"] == "correct" for e in examples)
    revised = [e for e in examples if e["turns"] > 1]
    right = sum(e["status"] == "correct" for e in examples)
    print(f"CodeI/O++ with SmolLM2 on turn 1 and the trace teacher revising ({len(examples)} predictions of "
          f"{RECORDS} records, {time.perf_counter() - t:.0f} s): first turn right {first}, revised "
          f"{len(revised)}, right after revision {right}; in {work}", flush=True)
    return {"work": work, "examples": len(examples), "first_right": first, "revised": len(revised),
            "right": right, "sample": revised[0] if revised else None}


def _lora(base_ckpt: Path, base_hf: Path, pp_work: Path, demo_dir: Path) -> tuple[Path, list[dict]]:
    """train with LoRA over the base on the CodeI/O++ examples (gin/train/demo_smollm2_lora.gin)."""
    from codeio_jax.gin_flags import parse_gin
    from codeio_jax.training import configurables

    configurables.register_all()
    import tensorflow_datasets as tfds

    from codeio_jax.training.trainer import train
    from tasks.codeio import task_sizes

    tfds.disable_progress_bar()
    sizes = task_sizes(pp_work / "tfrecords")
    mixture = "codeio_pp"  # single turn (first turns verified right) + revisions; an empty task is left out
    run_dir = demo_dir / "smollm2_lora"
    shutil.rmtree(run_dir, ignore_errors=True)  # the demo fine-tunes afresh every time
    parse_gin(["train/demo_smollm2_lora.gin"], "", [
        f"MODEL_DIR = {str(run_dir)!r}", f"DATA_DIR = {str(pp_work / 'tfrecords')!r}",
        f"INIT_FROM = {str(base_ckpt)!r}", f"TOKENIZER_FOLDER = {str(base_hf)!r}"])
    rows: list[dict] = []

    def progress(row):
        rows.append(row)
        print(f"  step {row['step']}: loss {row['loss']:.3f}, {row['tokens_per_s']:,.0f} tokens/s", flush=True)

    t = time.perf_counter()
    print(f"LoRA fine-tune of SmolLM2 on {mixture} ({', '.join(f'{k} {v}' for k, v in sizes.items() if v)}; "
          "gin/train/demo_smollm2_lora.gin):", flush=True)
    result = train(on_log=progress)
    print(f"fine-tuned {result.end_step} steps in {time.perf_counter() - t:.0f} s: loss {rows[0]['loss']:.3f} -> "
          f"{rows[-1]['loss']:.3f}", flush=True)
    return run_dir, rows


def _report(demo_dir: Path, before: dict, after: dict, pp: dict, rows: list[dict], seconds: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker="o")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (assistant tokens)")
    axes.set_title("SmolLM2-135M-Instruct, LoRA on CodeI/O++, CPU")
    figure.tight_layout()
    figure.savefig(demo_dir / "loss.png", dpi=120)
    plt.close(figure)
    lines = ["# codeio-jax demo: SmolLM2-135M-Instruct", "", f"Whole run: {seconds:.0f} s.", "",
             f"| pass@1, first {SLICE} samples | before | after LoRA |", "|---|---|---|"]
    lines += [f"| {name} | {before.scores[name]:.1f} | {after.scores[name]:.1f} |" for name in before.scores]
    lines += ["", f"CodeI/O++ with SmolLM2 answering turn 1 on {pp['examples']} prompts of {RECORDS} records: "
              f"first turn right {pp['first_right']}, revised by the trace teacher {pp['revised']}, right after "
              f"revision {pp['right']}.", "", "![loss](loss.png)", "", "| step | loss | tokens/s |", "|---|---|---|"]
    lines += [f"| {r['step']} | {r['loss']:.4f} | {r['tokens_per_s']:,.0f} |" for r in rows]
    sample = pp["sample"]
    if sample is not None:
        lines += ["", f"## A real first-turn mistake ({sample['task']}, {sample['id']})", "",
                  "SmolLM2's first turn:", "", _fenced(sample["turn_1"]), "", "The verifier's feedback:", "",
                  _fenced(sample["feedback_1"]), "", "The trace teacher's revision:", "", _fenced(sample["turn_2"])]
    for label, result in (("before", before), ("after", after)):
        lines += ["", f"## The first CRUXEval-O reply {label}", "", _fenced(result.first_replies["output"])]
    (demo_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"report: {demo_dir / 'report.md'} (loss curve {demo_dir / 'loss.png'})")


def _fenced(text: str) -> str:
    return "````\n" + (text or "").strip() + "\n````"
