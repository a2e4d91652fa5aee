"""`make demo`: everything that exists, end to end, on the shipped data.

1. Start the sandbox and say which protections this machine grants.
2. Score CRUXEval's ground truth (must be 100%) and a perturbed copy (near 0%),
   both modes, by execution.
3. Generate I/O pairs for the embedded corpus, and replay the CodeI/O authors'
   464 parsed records to see how many of their pairs re-execute the same.
4. Verify model-style replies for the generated pairs (right and wrong ones).
5. Let the trace teacher answer a prediction prompt of each kind per record,
   and verify every answer.

Later issues grow this into the main job (pipeline, training, evaluation).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from codeio_jax.data import ios
from codeio_jax.execution import Sandbox, SandboxConfig
from codeio_jax.data.prompts import prediction_prompts
from codeio_jax.records import OUTPUT_PREDICTION, read_unified
from codeio_jax.teachers.trace import TraceTeacher
from codeio_jax.verify import cruxeval
from codeio_jax.verify.synthetic import perturbed_generations
from codeio_jax.verify.verdicts import InputPrediction, verify_input_predictions, verify_output_prediction

AUTHORS_RECORDS = cruxeval.DEFAULT_DATA.parents[1] / "codeio" / "rawcode_1k_parsed.jsonl"


def main() -> int:
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="codeio-demo-"))
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

        out, errors = workdir / "ios.jsonl", workdir / "ios.errors.jsonl"
        t = time.perf_counter()
        summary = ios.run_file(ios.DEFAULT_CORPUS, out, errors, sandbox, ios.IOSettings())
        print(f"ios, embedded corpus: {summary.records} records -> {summary.kept} with "
              f"{summary.pairs} pairs, {summary.errors} errors ({time.perf_counter() - t:.1f} s)")
        _verify(sandbox, out)
        _trace_teacher(sandbox, out)

        if AUTHORS_RECORDS.exists():
            t = time.perf_counter()
            replay = ios.run_file(AUTHORS_RECORDS, workdir / "authors.jsonl",
                                  workdir / "authors.errors.jsonl", sandbox, ios.IOSettings())
            recorded = sum(len(r.ios) for r in read_unified(AUTHORS_RECORDS) if hasattr(r, "ios"))
            print(f"ios, the authors' {replay.records} parsed records replayed: {replay.pairs} of "
                  f"{recorded} pairs reproduced ({100 * replay.pairs / recorded:.1f}%), "
                  f"{replay.errors} records failed: {replay.error_reasons} ({time.perf_counter() - t:.1f} s)")
    print(f"outputs in {workdir}; done in {time.perf_counter() - started:.1f} s")
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


def _verify(sandbox: Sandbox, records_path: Path) -> None:
    """Right and wrong replies for the first pair of every record."""
    records = [json.loads(line) for line in records_path.read_text().splitlines()]
    outputs, inputs = [], []
    for rec in records:
        pair = rec["ios"][0]
        right = f'Tracing the code gives {{"output": {json.dumps(pair["output"])}}}'
        outputs.append(verify_output_prediction(right, pair["output"]).status)
        outputs.append(verify_output_prediction('I believe {"output": "surely wrong"}', pair["output"]).status)
        inputs.append(InputPrediction(f'{{"input": {json.dumps(pair["input"])}}}', rec["refcode"],
                                      pair["output"], rec["funcname"]))
        inputs.append(InputPrediction('{"input": {}}', rec["refcode"], pair["output"], rec["funcname"]))
    in_statuses = [v.status for v in verify_input_predictions(inputs, sandbox)]
    count = lambda items: {s: items.count(s) for s in sorted(set(items))}
    print(f"verify: output predictions {count(outputs)}; input predictions {count(in_statuses)}")


def _trace_teacher(sandbox: Sandbox, records_path: Path) -> None:
    """Offline chains of thought for one output- and one input-prediction prompt
    per record, each checked by the verifier."""
    records = {r.id: r for r in read_unified(records_path)}
    prompts = [p for r in records.values() for p in prediction_prompts(r, per_task=1)]
    t = time.perf_counter()
    replies = TraceTeacher(sandbox).answer(records, prompts)
    outputs = [verify_output_prediction(r.text, p.output).correct
               for p, r in zip(prompts, replies) if p.task == OUTPUT_PREDICTION]
    inputs = [v.correct for v in verify_input_predictions(
        [InputPrediction(r.text, records[p.record_id].refcode, p.output, records[p.record_id].funcname)
         for p, r in zip(prompts, replies) if p.task != OUTPUT_PREDICTION], sandbox)]
    chars = sum(len(r.text) for r in replies) // max(1, len(replies))
    print(f"trace teacher: {len(replies)} answers, {sum(outputs) + sum(inputs)} verified correct, "
          f"{chars} characters on average ({time.perf_counter() - t:.1f} s)")


if __name__ == "__main__":
    sys.exit(main())
