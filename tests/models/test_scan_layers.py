"""Layers run as lax.scan (ModelConfig.scan_layers) against the unrolled loop:
the same logits and the same gradient of every parameter, for a plain stack
(Llama), alternating sliding windows (Gemma 2) and a dense first layer before
MoE layers (DeepSeek-V2), without and with rematerialisation and with packed
segments; the runs the layers are cut into; and the parameter tree left as the
unrolled one, so checkpoints load either way."""

import jax
import jax.numpy as jnp
import pytest

from codeio_jax.models.decoder import Decoder, init_cache, init_params, layer_runs
from codeio_jax.models.presets import preset
from tests.models.test_moe import assert_trees_close, tiny_params


def logits_and_grads(config, params, tokens, segments):
    probe = jax.random.normal(jax.random.PRNGKey(7), (*tokens.shape, config.vocab_size))
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)

    def objective(p):
        logits = Decoder(config).apply({"params": p}, tokens, positions, segments)[0]
        return (logits * probe).sum(), logits

    (_, logits), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(params)
    return logits, grads


@pytest.mark.parametrize("name,layers", [("tiny_llama", 4), ("tiny_gemma2", 4), ("tiny_deepseek_v2", 4)])
@pytest.mark.parametrize("remat", ["none", "full"])
def test_scanned_layers_equal_the_unrolled_ones(name, layers, remat):
    config = preset(name).replace(num_layers=layers, remat=remat)
    params = tiny_params(config)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 16), 0, config.vocab_size)
    # Two packed documents in the first row: attention must stay inside each in the scan too.
    segments = jnp.stack([jnp.where(jnp.arange(16) < 9, 1, 2), jnp.ones(16, jnp.int32)])
    unrolled = logits_and_grads(config, params, tokens, segments)
    scanned = logits_and_grads(config.replace(scan_layers=True), params, tokens, segments)
    assert_trees_close(scanned, unrolled, f"{name}/{remat}")
    # Every layer takes part, so a scan that skipped or repeated one would show above.
    for i in range(layers):
        assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(unrolled[1][f"layers_{i}"])) > 0


def test_the_parameter_tree_is_the_unrolled_one():
    config = preset("tiny_gemma2").replace(num_layers=4)
    unrolled = jax.tree.map(jnp.shape, init_params(config, jax.random.PRNGKey(0)))
    scanned = jax.tree.map(jnp.shape, init_params(config.replace(scan_layers=True), jax.random.PRNGKey(0)))
    assert scanned == unrolled


def test_the_kv_cache_path_runs_the_loop():
    """Sampling passes a cache: with scan_layers on, the cached forward still runs the
    unrolled loop and gives the logits of the scanned forward without a cache."""
    config = preset("tiny_llama").replace(num_layers=3, scan_layers=True)
    params = tiny_params(config)
    tokens = jax.random.randint(jax.random.PRNGKey(2), (1, 6), 0, config.vocab_size)
    positions = jnp.arange(6)[None]
    scanned = Decoder(config).apply({"params": params}, tokens, positions)[0]
    cached, cache = Decoder(config).apply({"params": params}, tokens, positions, None, init_cache(config, 1, 6))
    assert len(cache) == 3
    assert_trees_close(cached, scanned, "forward")


@pytest.mark.parametrize("name,runs", [
    ("llama3_1_8b", [(0, 1, 32)]),
    ("smollm2_135m", [(0, 1, 30)]),
    ("gemma2_27b", [(0, 2, 23)]),
    ("deepseek_v2_lite", [(0, 1, 1), (1, 1, 26)]),
])
def test_layer_runs_of_the_paper_models(name, runs):
    assert layer_runs(preset(name)) == runs


def test_layer_runs_cover_an_odd_gemma_stack():
    # 5 alternating layers: two (slide, global) pairs, then the last sliding layer alone.
    config = preset("tiny_gemma2").replace(num_layers=5)
    runs = layer_runs(config)
    assert runs == [(0, 2, 2), (4, 1, 1)]
    assert sum(period * repeats for _, period, repeats in runs) == 5
