"""The chunked loss: the same loss, metrics and gradients as the whole-sequence
loss, and no [batch, length, vocab] logits in the compiled step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codeio_jax.models.decoder import Decoder
from codeio_jax.models.presets import preset
from codeio_jax.training.input import SyntheticInput
from codeio_jax.training.step import loss_fn


def params_for(config, seed=0):
    from codeio_jax.models.decoder import init_params

    import flax.linen as nn

    return nn.meta.unbox(init_params(config, jax.random.PRNGKey(seed)))


def batch_for(config, length, batch=3, seed=1):
    rows = next(SyntheticInput(config.vocab_size, length=length, batch_size=batch, seed=seed))
    # Loss on part of each row only, as chat data has it.
    rng = np.random.default_rng(seed)
    rows["decoder_loss_weights"] = (rng.random(rows["decoder_loss_weights"].shape) < 0.6).astype(np.int32)
    return {key: jnp.asarray(value) for key, value in rows.items()}


@pytest.mark.parametrize("name,chunk", [("tiny_llama", 16), ("tiny_llama", 24), ("tiny_qwen2", 8),
                                        ("tiny_gemma2", 20)])
def test_chunked_loss_and_gradients_equal_the_whole_sequence(name, chunk):
    # tiny_llama: untied head; tiny_qwen2: tied; tiny_gemma2: tied and soft-capped. 24 and 20 leave a
    # partial last chunk (64 positions), padded with weight 0.
    config = preset(name)
    params, batch = params_for(config), batch_for(config, 64)
    model = Decoder(config)

    def run(chunk_length):
        grad = jax.value_and_grad(functools.partial(loss_fn, model=model, batch=batch, z_loss=1e-3,
                                                    chunk_length=chunk_length), has_aux=True)
        (total, metrics), grads = jax.jit(grad)(params)
        return total, metrics, grads

    whole, chunked = run(0), run(chunk)
    assert float(whole[1]["loss"]) > 1.0  # a real loss, not zero weights
    np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-6)
    for key in whole[1]:
        np.testing.assert_allclose(chunked[1][key], whole[1][key], rtol=1e-6, atol=1e-7, err_msg=key)
    flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])
    np.testing.assert_allclose(flat(chunked[2]), flat(whole[2]), rtol=1e-6, atol=1e-6)


def test_the_compiled_chunked_step_never_holds_the_whole_logits():
    config = preset("tiny_llama").replace(vocab_size=4096)
    params, batch = params_for(config), batch_for(config, 256, batch=2)
    model = Decoder(config)

    def hlo(chunk_length):
        grad = jax.grad(lambda p: loss_fn(p, model, batch, 0.0, chunk_length)[0])
        return jax.jit(grad).lower(params).compile().as_text()

    whole_logits = "f32[2,256,4096]"
    assert whole_logits in hlo(0)
    chunked = hlo(64)
    assert whole_logits not in chunked and "f32[2,64,4096]" in chunked
