"""The gin recipes end to end on tiny data: stage 1 on the pipeline's SeqIO
tasks, stage 2 on a JSONL of chats starting from stage 1's weights."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from codeio_jax.data.pipeline import run_pipeline
from tests.data.test_pipeline import small_corpus

pytest.importorskip("seqio")
REPO = Path(__file__).resolve().parents[2]


def train(*flags, timeout=600):
    return subprocess.run([sys.executable, "-m", "codeio_jax.cli", "train", *map(str, flags)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from tasks.tokenizer_training import train_bpe

    tmp = tmp_path_factory.mktemp("recipes")
    report = run_pipeline(work_dir=tmp / "run", source=small_corpus(tmp, 4), per_task=2, rounds=1, workers=2)
    examples = [json.loads(line) for line in report.examples.read_text().splitlines()]
    tokenizer = train_bpe([e["prompt"] + e["turn_1"] for e in examples], tmp / "tokenizer", "qwen2", 600)
    return tmp, report.work_dir / "tfrecords", tokenizer.parent


def common(tmp, tokenizer, name):
    return ["--gin_file", "models/tiny_llama.gin", f"--gin.MODEL_DIR='{tmp / name}'",
            f"--gin.TOKENIZER='{tokenizer}'", "--gin.FAMILY='qwen2'", "--gin.preset.vocab_size=640",
            "--gin.SeqioInput.length=2048", "--gin.SeqioInput.batch_size=2", "--gin.train.compute_dtype='float32'",
            "--gin.train.remat='none'", "--gin.train.steps=3", "--gin.train.log_every=1",
            "--gin.OptimizerConfig.warmup_steps=1", "--gin.OptimizerConfig.accumulation_steps=1"]


def test_stage1_codeio_pp_then_stage2_instructions(data):
    tmp, tfrecords, tokenizer = data
    done = train(*common(tmp, tokenizer, "stage1"), "--gin_file", "train/stage1_codeio_pp.gin",
                 f"--gin.DATA_DIR='{tfrecords}'")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp / "stage1" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert all(0 < row["loss_tokens"] < 2 * 2048 for row in rows)  # the mask: only assistant tokens count
    chats = tmp / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                                                      {"role": "assistant", "content": str(2 * i)}]}) + "\n"
                             for i in range(50)))
    done = train(*common(tmp, tokenizer, "stage2"), "--gin_file", "train/stage2_instruct.gin",
                 f"--gin.INSTRUCTIONS='{chats}'", f"--gin.INIT_FROM='{tmp / 'stage1'}'",
                 f"--gin.DATA_DIR='{tfrecords}'")
    assert done.returncode == 0, done.stderr[-3000:]
    first = json.loads((tmp / "stage2" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 1 and first["loss"] < rows[0]["loss"] + 5  # started from stage 1's weights


def test_a_recipe_without_its_data_says_what_is_missing(data):
    tmp, _, tokenizer = data
    done = train(*common(tmp, tokenizer, "nodata"), "--gin_file", "train/stage1_codeio.gin",
                 f"--gin.DATA_DIR='{tmp / 'nowhere'}'")
    assert done.returncode == 2 and "write stage" in done.stderr
