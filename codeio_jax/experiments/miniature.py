"""The paper's comparison in miniature: one base model, four arms, one table.

    records --split by record id--> train records | held-out records
    base:            the model as it is
    codeio:          + LoRA on CodeI/O data (trace-teacher chains of thought, one turn)
    codeio_pp:       + LoRA on CodeI/O++ data (the base model answers turn 1, the
                     verifier's feedback, the trace teacher revises; plus the first
                     turns verified right)
    codeio_no_cot:   + LoRA on the CodeI/O prompts answered without a chain of
                     thought (the paper's ablation: the final answer alone)

Every arm trains the same steps on the same shapes from the same base with the
same seed; each is then evaluated on the held-out records (their input and
output prediction prompts answered by the arm, verified by execution: never
trained on, the split is by record id) and on CRUXEval-O and -I (all 800, or a
slice: `cruxeval_limit`). The table lists examples and tokens per arm.

`codeio-jax experiment --gin_file experiments/miniature_cpu.gin` runs the CPU
size; gin/experiments/miniature_paper.gin has the paper's settings.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import gin

ARMS = ("base", "codeio", "codeio_pp", "codeio_no_cot")
# What each arm trains on: the data it is made from and the mixture read.
MIXTURES = {"codeio": "codeio", "codeio_pp": "codeio_pp", "codeio_no_cot": "codeio"}
ANSWER_KEYS = {"output_prediction": "output", "input_prediction": "input"}


@dataclasses.dataclass
class ArmResult:
    arm: str
    examples: int  # training examples (0 for the base)
    tokens: int  # tokens of those examples in the model's chat template
    loss_tokens: int  # of which the loss falls on (assistant turns)
    final_loss: float | None
    held_out: dict[str, float]  # task -> first-turn pass rate (percent)
    cruxeval: dict[str, float]  # CRUXEval-O / -I pass@1 (percent)


def split_records(source: Path, held_out_fraction: float, seed: int, out_dir: Path) -> tuple[Path, Path]:
    """train.jsonl and held_out.jsonl: each record by a hash of (seed, its id), so a
    record and every prompt made from it fall on one side."""
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
    out_dir.mkdir(parents=True, exist_ok=True)
    sides: dict[str, list[str]] = {"train": [], "held_out": []}
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record_id = str(json.loads(line)["id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{source}:{number} is not a record with an id") from None
        digest = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
        side = "held_out" if int.from_bytes(digest[:8], "big") / 2 ** 64 < held_out_fraction else "train"
        sides[side].append(line)
    if not sides["train"] or not sides["held_out"]:
        raise ValueError(f"{source}: the split left {len(sides['train'])} train and {len(sides['held_out'])} "
                         "held-out records; use more records or another held_out_fraction")
    paths = []
    for side, lines in sides.items():
        path = out_dir / f"{side}.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


def without_chain_of_thought(examples: Path, dest: Path) -> int:
    """The ablation's examples: each CodeI/O example's reply cut to its final answer
    (the JSON object the prompt asks for). Returns how many were kept; an example
    whose answer is not JSON-representable is left out."""
    from codeio_jax.verify.extract import extract_answer

    kept = 0
    with open(dest, "w", encoding="utf-8") as out:
        for line in examples.read_text(encoding="utf-8").splitlines():
            example = json.loads(line)
            key = ANSWER_KEYS[example["task"]]
            answer = extract_answer(example["turn_1"], key)
            if answer is None:
                continue
            try:
                text = json.dumps({key: answer.value}, ensure_ascii=False)
            except (TypeError, ValueError):
                continue
            example["turn_1"] = f"```json\n{text}\n```"
            out.write(json.dumps(example, ensure_ascii=False) + "\n")
            kept += 1
    return kept


@gin.configurable
def run_miniature(work_dir: str | Path = gin.REQUIRED, base_model: str | Path = gin.REQUIRED,
                  source: str | Path | None = None, arms: Sequence[str] = ARMS, held_out_fraction: float = 0.2,
                  seed: int = 0, per_task: int = 1, max_pairs: int = 10, answer_new_tokens: int = 128,
                  eval_new_tokens: int = 128, cruxeval_limit: int | None = None, train_steps: int = 8,
                  length: int = 2048, batch_size: int = 1, learning_rate: float = 1e-3, lora: Any = None,
                  full_fine_tune: bool = False, compute_dtype: str = "float32", remat: str = "full",
                  scan_layers: bool = True, on_line: Callable[[str], None] = print) -> list[ArmResult]:
    """Run the arms (see the module docstring) and write table.md and results.json in `work_dir`.

    base_model: a Hugging Face folder (with tokenizer.json and its chat template).
    source: unified records (default: the embedded corpus).
    per_task, max_pairs: prompts per task per record and I/O pairs per record.
    answer_new_tokens: the base model's first-turn budget for the CodeI/O++ data;
    eval_new_tokens: every arm's budget when evaluated.
    cruxeval_limit: the first N samples of each mode (None: all 800).
    train_steps x batch_size rows of `length` tokens: the same for every arm.
    lora: the adapters (default: rank 16, alpha 32, every projection); full_fine_tune:
    train every weight instead (the paper's way; a base model checkpoint per arm).
    remat, scan_layers: the step's. On a CPU host unrolled layers keep every layer's
    activations (README, Training); a run with unrolled layers and no remat was
    killed for memory at 15 GB resident on its first 2048-token arm."""
    from codeio_jax.data import ios
    from codeio_jax.experiments.model_folders import checkpoint_of, merged_hf_folder
    from codeio_jax.models.config import LoraConfig

    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; the arms are {', '.join(ARMS)}")
    work = Path(work_dir)
    base_hf = Path(base_model)
    if not (base_hf / "config.json").exists() or not (base_hf / "tokenizer.json").exists():
        raise FileNotFoundError(f"{base_hf} is not a Hugging Face model folder with config.json and tokenizer.json")
    lora = None if full_fine_tune else (lora or LoraConfig(targets=("all-linear",), rank=16, alpha=32.0))
    started = time.perf_counter()
    train_records, held_out = split_records(Path(source or ios.DEFAULT_CORPUS), held_out_fraction, seed,
                                            work / "split")
    on_line(f"records: {_lines(train_records)} train, {_lines(held_out)} held out (by record id)")
    base_ckpt = checkpoint_of(base_hf, work / "base_checkpoint")
    data = _arm_data(arms, work, train_records, base_hf, seed, per_task, max_pairs, answer_new_tokens, on_line)
    results = []
    for arm in arms:
        t = time.perf_counter()
        folder, final_loss, counts = base_hf, None, (0, 0, 0)
        if arm != "base":
            run_dir = work / arm / "run"
            final_loss, counts = _fine_tune(arm, data[arm], base_ckpt, base_hf, run_dir, train_steps, length,
                                            batch_size, learning_rate, lora, compute_dtype, remat, scan_layers,
                                            seed, on_line)
            folder = merged_hf_folder(run_dir, base_hf, work / arm / "model_hf")
        held = _held_out(folder, held_out, work / arm / "held_out", seed, per_task, max_pairs, eval_new_tokens)
        from codeio_jax.experiments.cruxeval_eval import evaluate_cruxeval

        crux = evaluate_cruxeval(folder, cruxeval_limit, eval_new_tokens)
        results.append(ArmResult(arm, counts[0], counts[1], counts[2], final_loss, held, crux.scores))
        on_line(f"{arm}: {_fmt(held)}; {_fmt(crux.scores)} ({time.perf_counter() - t:.0f} s)")
    table = _write(work, results, cruxeval_limit, time.perf_counter() - started, train_steps * batch_size * length)
    on_line(f"table ({work / 'table.md'}):\n{table}")
    return results


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def _fmt(scores: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.1f}" for name, value in scores.items())


def _arm_data(arms, work: Path, train_records: Path, base_hf: Path, seed: int, per_task: int, max_pairs: int,
              answer_new_tokens: int, on_line) -> dict[str, Path]:
    """Each trained arm's TFRecord folder, made from the train records alone."""
    from codeio_jax.data.pipeline import LocalTeacherSpec, TraceTeacherSpec, run_pipeline, write_examples

    data: dict[str, Path] = {}
    common = dict(seed=seed, per_task=per_task, max_pairs=max_pairs)
    if {"codeio", "codeio_no_cot"} & set(arms):
        t = time.perf_counter()
        report = run_pipeline(work_dir=work / "data_codeio", source=train_records, rounds=0,
                              turn_teachers=[TraceTeacherSpec()], **common)
        data["codeio"] = report.work_dir / "tfrecords"
        on_line(f"codeio data: {_lines(report.examples)} examples ({time.perf_counter() - t:.0f} s)")
        if "codeio_no_cot" in arms:
            folder = work / "data_codeio_no_cot"
            folder.mkdir(parents=True, exist_ok=True)
            kept = without_chain_of_thought(report.examples, folder / "examples.jsonl")
            write_examples(folder / "examples.jsonl", folder / "tfrecords", 1)
            data["codeio_no_cot"] = folder / "tfrecords"
            on_line(f"codeio_no_cot data: {kept} examples, the answers alone")
    if "codeio_pp" in arms:
        t = time.perf_counter()
        report = run_pipeline(work_dir=work / "data_codeio_pp", source=train_records, rounds=1, turn_teachers=[
            LocalTeacherSpec(model=str(base_hf), max_new_tokens=answer_new_tokens), TraceTeacherSpec()], **common)
        data["codeio_pp"] = report.work_dir / "tfrecords"
        examples = [json.loads(line) for line in report.examples.read_text().splitlines()]
        on_line(f"codeio_pp data: {len(examples)} examples, {sum(e['turns'] > 1 for e in examples)} revised "
                f"(the base model's first turns, {time.perf_counter() - t:.0f} s)")
    return data


def _fine_tune(arm: str, data_dir: Path, base_ckpt: Path, base_hf: Path, run_dir: Path, steps: int, length: int,
               batch_size: int, learning_rate: float, lora, compute_dtype: str, remat: str, scan_layers: bool,
               seed: int, on_line) -> tuple[float, tuple[int, int, int]]:
    from codeio_jax.training.input import SeqioInput
    from codeio_jax.training.optimizer import OptimizerConfig
    from codeio_jax.training.trainer import train
    from tasks.codeio import register_codeio_tasks
    from tasks.vocabularies import HFTokenizerVocabulary

    vocabulary = HFTokenizerVocabulary(str(base_hf))
    prefix = f"{arm}_"
    register = functools.partial(register_codeio_tasks, data_dir=str(data_dir), vocabulary=vocabulary,
                                 family="llama3", prefix=prefix, chat_template=str(base_hf))
    register()
    mixture = prefix + MIXTURES[arm]
    counts = _token_counts(mixture)
    shutil.rmtree(run_dir, ignore_errors=True)  # every arm trains afresh
    losses: list[float] = []
    optimizer = OptimizerConfig(learning_rate=learning_rate, warmup_steps=min(2, steps), schedule="constant",
                                weight_decay=0.0)
    t = time.perf_counter()
    train(model_dir=run_dir, inputs=SeqioInput(mixture, length=length, batch_size=batch_size, seed=seed),
          steps=steps, optimizer=optimizer, seed=seed, compute_dtype=compute_dtype, remat=remat,
          scan_layers=scan_layers, log_every=1,
          checkpoint_every=steps, async_checkpoints=False, init_from=base_ckpt, lora=lora,
          on_log=lambda row: losses.append(row["loss"]))
    how = "LoRA" if lora is not None else "full fine-tuning"
    on_line(f"{arm}: {counts[0]} examples ({counts[1]:,} tokens, {counts[2]:,} with loss); {steps} {how} steps, "
            f"loss {losses[0]:.3f} -> {losses[-1]:.3f} ({time.perf_counter() - t:.0f} s)")
    return losses[-1], counts


def _token_counts(mixture: str) -> tuple[int, int, int]:
    """(examples, tokens, loss tokens) of a mixture's data, unpacked, one pass."""
    import seqio

    examples = tokens = loss = 0
    for task in seqio.get_mixture_or_task(mixture).tasks:
        for row in task.get_dataset(sequence_length=None, split="train", shuffle=False).as_numpy_iterator():
            examples += 1
            tokens += len(row["targets"])
            loss += int(row["loss_weights"].sum())
    return examples, tokens, loss


def _held_out(folder: Path, records: Path, work: Path, seed: int, per_task: int, max_pairs: int,
              max_new_tokens: int) -> dict[str, float]:
    """First-turn pass rate per task on the held-out records' prompts, verified by execution."""
    from codeio_jax.data import report as quality
    from codeio_jax.data.pipeline import LocalTeacherSpec, run_pipeline

    shutil.rmtree(work, ignore_errors=True)
    run_pipeline(work_dir=work, source=records, seed=seed, per_task=per_task, max_pairs=max_pairs, rounds=0,
                 turn_teachers=[LocalTeacherSpec(model=str(folder), max_new_tokens=max_new_tokens)])
    rows = [json.loads(line) for line in (work / "verdicts_1.jsonl").read_text().splitlines()]
    figures = quality.turn_figures(rows)
    return {f"held-out {task.split('_')[0]}": 100.0 * figures[task]["first_pass_rate"]
            for task in ("output_prediction", "input_prediction") if task in figures}


def _write(work: Path, results: list[ArmResult], cruxeval_limit: int | None, seconds: float,
           trained_tokens: int) -> str:
    """table.md and results.json; returns the table."""
    crux = "all 800" if cruxeval_limit is None else f"first {cruxeval_limit}"
    columns = sorted({name for r in results for name in r.held_out}, reverse=True)
    header = ["arm", "examples", "tokens (loss)", *columns, f"CRUXEval-O ({crux})", f"CRUXEval-I ({crux})"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [r.arm, str(r.examples), f"{r.tokens:,} ({r.loss_tokens:,})" if r.examples else "-"]
        cells += [f"{r.held_out.get(name, float('nan')):.1f}" for name in columns]
        cells += [f"{r.cruxeval['CRUXEval-O']:.1f}", f"{r.cruxeval['CRUXEval-I']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Every trained arm: the same {trained_tokens:,} packed positions (steps x batch x length) "
                  f"from the same base. Pass rates in percent; whole run {seconds:.0f} s."]
    table = "\n".join(lines) + "\n"
    (work / "table.md").write_text(table, encoding="utf-8")
    (work / "results.json").write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=2) + "\n")
    return table
