"""`make demo`: the main job, offline, on the shipped data.

1. Start the sandbox and say which protections this machine grants.
2. Score CRUXEval's ground truth (must be 100%) and a perturbed copy (near 0%),
   both modes, by execution.
3. Run the CodeI/O++ data pipeline (gin/data/codeio_pp.gin) on the embedded
   corpus with the trace teacher: I/O pairs, prompts, answers, verification, a
   revision round, examples, TFRecord shards.
4. Train a small byte-level BPE tokenizer.json on the examples (nothing to
   download), register the SeqIO tasks over the shards with it (Qwen 2.5 chat
   format) and pack a batch of each mixture through the chat feature converter.

Later issues add training a small model on these tasks and evaluating it.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from codeio_jax.execution import Sandbox, SandboxConfig
from codeio_jax.verify import cruxeval
from codeio_jax.verify.synthetic import perturbed_generations

DEMO_DIR = Path(__file__).resolve().parents[1] / "runs" / "demo"


def main() -> int:
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
    _seqio(report)
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
        print("seqio: not installed (pip install -e '.[seqio]'); skipped")
        return
    from tasks import codeio
    from tasks.feature_converters import ChatLMFeatureConverter
    from tasks.tokenizer_training import train_bpe
    from tasks.vocabularies import HFTokenizerVocabulary

    examples = [json.loads(line) for line in report.examples.read_text().splitlines()]
    texts = [example[field] for example in examples for field in ("prompt", "turn_1", "turn_2") if example[field]]
    path = train_bpe(texts, report.work_dir / "tokenizer", family="qwen2", vocab_size=4096)
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


if __name__ == "__main__":
    sys.exit(main())
