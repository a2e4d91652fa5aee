"""Our decoder against transformers, family by family: imported logits, exported
checkpoints, decoding with the cache."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codeio_jax.models import convert
from codeio_jax.models.config import from_hf_config
from codeio_jax.models.decoder import Decoder, init_cache, logical_axes
from tests.models.hf_tiny import hf_logits, max_diff_on_real_tokens, padded_batch, tiny_model

pytest.importorskip("torch")
FAMILIES = ("llama", "qwen2", "gemma2")


@pytest.fixture(scope="module", params=FAMILIES)
def imported(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    model = tiny_model(request.param, folder)
    config, params = convert.load_hf(folder)
    return request.param, folder, model, config, params


def logits_of(config, params, tokens):
    return np.asarray(Decoder(config).apply({"params": params}, jnp.asarray(tokens))[0])


def test_imported_logits_match_transformers(imported):
    family, _, model, config, params = imported
    tokens, mask = padded_batch()
    diff = max_diff_on_real_tokens(logits_of(config, params, tokens), hf_logits(model, tokens, mask), mask)
    assert diff < 1e-4, f"{family}: {diff}"


def test_exported_checkpoint_loads_in_transformers_with_the_same_logits(imported, tmp_path):
    import transformers as tr

    family, _, model, config, params = imported
    convert.save_hf(tmp_path, config, params)
    reloaded = tr.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    tokens, mask = padded_batch(1)
    diff = max_diff_on_real_tokens(hf_logits(reloaded, tokens, mask), hf_logits(model, tokens, mask), mask)
    assert diff < 1e-5, f"{family}: {diff}"
    assert type(reloaded).__name__ == type(model).__name__


def test_decoding_with_the_cache_equals_the_full_forward(imported):
    family, _, _, config, params = imported
    tokens, mask = padded_batch(2)
    lengths = mask.sum(1)
    full = logits_of(config, params, tokens)
    model = Decoder(config)
    cache = init_cache(config, tokens.shape[0], 16)
    # Prefill the first 4 tokens of every row, then one token at a time, rows at their own positions.
    prefill = jnp.asarray(tokens[:, :4])
    positions = jnp.broadcast_to(jnp.arange(4)[None], (3, 4))
    logits, cache = model.apply({"params": params}, prefill, positions, None, cache)
    np.testing.assert_allclose(np.asarray(logits), full[:, :4], atol=1e-4)
    step = jax.jit(lambda p, t, pos, c: model.apply({"params": p}, t, pos, None, c))
    for t in range(4, 12):
        logits, cache = step(params, jnp.asarray(tokens[:, t:t + 1]), jnp.full((3, 1), t), cache)
        for b in range(3):
            if t < lengths[b]:
                np.testing.assert_allclose(np.asarray(logits[b, 0]), full[b, t], atol=1e-4, err_msg=family)


def test_sharded_checkpoints_import_through_the_index(tmp_path):
    model = tiny_model("llama", tmp_path, max_shard_size="50KB")
    assert (tmp_path / convert.INDEX).exists() and len(list(tmp_path.glob("*.safetensors"))) > 1
    config, params = convert.load_hf(tmp_path)
    tokens, mask = padded_batch()
    assert max_diff_on_real_tokens(logits_of(config, params, tokens), hf_logits(model, tokens, mask), mask) < 1e-4
    written = convert.save_hf(tmp_path / "out", config, params, max_shard_bytes=60_000)
    assert len(written) > 1 and (tmp_path / "out" / convert.INDEX).exists()
    _, again = convert.load_hf(tmp_path / "out")
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, again)


def test_every_parameter_has_logical_axis_names(imported):
    _, _, _, config, params = imported
    axes = logical_axes(config)
    flat_axes = dict(jax.tree_util.tree_flatten_with_path(axes, is_leaf=lambda x: x is None or
                                                          type(x).__name__ == "PartitionSpec")[0])
    flat_params = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    assert flat_axes.keys() == flat_params.keys()
    known = {"batch", "length", "embed", "heads", "kv_heads", "head_dim", "mlp", "vocab", "experts"}
    for path, spec in flat_axes.items():
        assert len(spec) == flat_params[path].ndim and set(spec) <= known, path


def test_bad_checkpoints_fail_clearly(tmp_path):
    tiny_model("llama", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    with pytest.raises(ValueError, match="not supported"):
        from_hf_config({**config, "model_type": "mamba"})
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 4}))
    with pytest.raises(convert.CheckpointError, match="missing tensors"):
        convert.load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 2}))
    with pytest.raises(convert.CheckpointError, match="no place for"):
        convert.load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    from safetensors.numpy import save_file

    save_file({"model.vision_tower.weight": np.zeros(2, np.float32)}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(convert.CheckpointError, match="vision_tower.*matches nothing"):
        convert.load_hf(tmp_path)
    with pytest.raises(convert.CheckpointError, match="no config.json"):
        convert.load_hf(tmp_path / "nowhere")


def test_forward_fn_maps_tokens_to_logits(imported):
    family, folder, model, _, _ = imported
    tokens, mask = padded_batch(3)
    logits = np.asarray(convert.forward_fn(folder)(tokens))
    assert logits.shape == (3, 12, 128)
    assert max_diff_on_real_tokens(logits, hf_logits(model, tokens, mask), mask) < 1e-4
    bf16 = np.asarray(convert.forward_fn(folder, dtype="bfloat16")(tokens), np.float32)
    assert (bf16.argmax(-1) == logits.argmax(-1)).mean() > 0.9  # bfloat16: close, not equal
