"""`codeio-jax convert` both ways, and the preset sizes."""

import jax
import numpy as np
import pytest

from codeio_jax.models import checkpoint, convert
from codeio_jax.models.decoder import init_params
from codeio_jax.models.presets import PRESETS, preset
from tests.models.hf_tiny import hf_logits, max_diff_on_real_tokens, padded_batch, tiny_model
from tests.test_cli import cli

pytest.importorskip("torch")


def test_convert_round_trip_through_our_checkpoint(tmp_path):
    import transformers as tr

    model = tiny_model("gemma2", tmp_path / "hf")
    done = cli("convert", "hf-to-jax", "--in", tmp_path / "hf", "--out", tmp_path / "ours", timeout=300)
    assert done.returncode == 0, done.stderr
    assert "gemma2, 3 layers" in done.stdout
    config, params = checkpoint.load(tmp_path / "ours")
    assert config == convert.read_config(tmp_path / "hf")
    done = cli("convert", "jax-to-hf", "--in", tmp_path / "ours", "--out", tmp_path / "back", timeout=300)
    assert done.returncode == 0, done.stderr
    tokens, mask = padded_batch()
    back = tr.AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    assert max_diff_on_real_tokens(hf_logits(back, tokens, mask), hf_logits(model, tokens, mask), mask) < 1e-6
    again = cli("convert", "hf-to-jax", "--in", tmp_path / "hf", "--out", tmp_path / "ours", timeout=300)
    assert again.returncode == 2 and "exists" in again.stderr
    missing = cli("convert", "jax-to-hf", "--in", tmp_path / "hf", "--out", tmp_path / "x", timeout=300)
    assert missing.returncode == 2 and "not a codeio-jax model checkpoint" in missing.stderr


def parameter_count(config):
    shapes = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    leaves = jax.tree_util.tree_leaves(shapes, is_leaf=lambda x: hasattr(x, "value"))
    return sum(int(np.prod(getattr(x, "value", x).shape)) for x in leaves)


@pytest.mark.parametrize("name,count", [("llama3_1_8b", 8_030_261_248), ("llama3_2_1b", 1_235_814_400),
                                        ("qwen2_5_coder_7b", 7_615_616_512), ("gemma2_27b", 27_227_128_320)])
def test_presets_have_the_released_parameter_counts(name, count):
    assert parameter_count(preset(name)) == count


def test_unknown_preset():
    with pytest.raises(ValueError, match="tiny_llama"):
        preset("llama9")
    assert all(parameter_count(PRESETS[n]) < 200_000 for n in ("tiny_llama", "tiny_qwen2", "tiny_gemma2"))
