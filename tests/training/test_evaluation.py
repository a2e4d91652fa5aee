"""`codeio-jax eval`: a model answers CRUXEval by generation, the answers run in the sandbox."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from codeio_jax.models import checkpoint
from codeio_jax.models.decoder import init_params
from codeio_jax.models.presets import preset
from tests.conftest import shared_data

pytest.importorskip("seqio")
REPO = Path(__file__).resolve().parents[2]


def test_eval_command_scores_a_model_on_a_cruxeval_slice(tmp_path):
    from codeio_jax.verify.cruxeval import load_samples
    from tasks.tokenizer_training import train_bpe

    data = shared_data("cruxeval/cruxeval.jsonl")
    texts = [sample.code for sample in load_samples(data).values()]
    tokenizer = train_bpe(texts, tmp_path / "tokenizer", "qwen2", 600).parent
    config = preset("tiny_llama").replace(vocab_size=640)
    params = jax.tree_util.tree_map(lambda x: x.value if hasattr(x, "value") else x,
                                    init_params(config, jax.random.PRNGKey(0)), is_leaf=lambda x: hasattr(x, "value"))
    checkpoint.save(tmp_path / "model", config, params)
    out = tmp_path / "scores.json"
    done = subprocess.run([sys.executable, "-m", "codeio_jax.cli", "eval", "--gin_file", "eval/cruxeval.gin",
                           f"--gin.CHECKPOINT='{tmp_path / 'model'}'", f"--gin.TOKENIZER='{tokenizer}'",
                           "--gin.FAMILY='qwen2'", f"--gin.TFDS_DIR='{tmp_path / 'tfds'}'",
                           f"--gin.register_cruxeval_tasks.source_path='{data}'", "--gin.SeqioEvaluator.limit=4",
                           "--gin.SeqioEvaluator.max_new_tokens=8", f"--gin.evaluate.output='{out}'"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads(out.read_text())
    for mode in ("input", "output"):
        # A random model's answers fail, but each was run and scored.
        assert scores[f"eval/cruxeval_{mode}/pass@1"] == 0.0
    assert "eval/cruxeval_output/pass@1: 0.00" in done.stdout
