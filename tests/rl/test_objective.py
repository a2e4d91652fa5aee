"""The GRPO objective against the formulas written out directly."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codeio_jax.models import presets
from codeio_jax.models.decoder import Decoder, init_params
from codeio_jax.rl.objective import GRPOConfig, group_advantages, grpo_loss, token_logprobs
from codeio_jax.rl.rollout import training_rows

CONFIG = presets.preset("tiny_llama").replace(dtype="float32", vocab_size=97)
ROWS = [((1, 5, 9), (3, 4, 2)), ((7, 8), (6,)), ((2, 3, 4, 5), (11, 12, 13, 14, 15))]


def jitted(fn):
    """fn(params, batch) compiled once: eager mode would compile every operation of the model on its own."""
    return jax.jit(fn)


def setup():
    params = nn.meta.unbox(init_params(CONFIG, jax.random.PRNGKey(0)))
    batch = {k: jnp.asarray(v) for k, v in training_rows(ROWS, 4).items()}
    return Decoder(CONFIG), params, batch


def direct_logprobs(model, params, rows):
    """log p of each completion token, from the model's logits, row by row."""
    out = []
    for prompt, completion in rows:
        sequence = jnp.asarray([list(prompt) + list(completion)])
        logits, _ = model.apply({"params": params}, sequence)
        logp = jax.nn.log_softmax(logits[0, :-1].astype(jnp.float32))
        targets = sequence[0, 1:]
        picked = logp[jnp.arange(len(targets)), targets]
        out.append(picked[len(prompt) - 1:])
    return out


def test_token_logprobs_chunked_or_not_match_the_logits():
    model, params, batch = setup()
    mask = np.asarray(batch["decoder_loss_weights"])
    rows = jitted(lambda p, _: direct_logprobs(model, p, ROWS))(params, None)
    for chunk in (0, 4, 5):
        logp = np.asarray(jitted(lambda p, b: token_logprobs(p, model, b, chunk_length=chunk))(params, batch))
        for i, direct in enumerate(rows):
            np.testing.assert_allclose(logp[i][mask[i] == 1], np.asarray(direct), rtol=1e-5, atol=1e-5)
    assert mask[3].sum() == 0  # the padding row trains nothing


def test_group_advantages():
    rewards = np.array([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    np.testing.assert_allclose(group_advantages(rewards, GRPOConfig(group_size=4)),
                               [[0.5 / 0.5001, -0.5 / 0.5001, -0.5 / 0.5001, 0.5 / 0.5001], [0, 0, 0, 0]], rtol=1e-5)
    np.testing.assert_allclose(group_advantages(rewards, GRPOConfig(group_size=4, dr_grpo=True)),
                               [[0.5, -0.5, -0.5, 0.5], [0, 0, 0, 0]])


def reference_loss(params, model, advantages, dr_grpo, budget):
    """-mean over rows of A_i x (mean or budget-normalised sum of the token log-probs);
    on-policy the ratio is 1 and its gradient is the log-probability's."""
    per_row = []
    for a, logp in zip(advantages, direct_logprobs(model, params, ROWS)):
        per_row.append(-a * (logp.sum() / budget if dr_grpo else logp.mean()))
    return sum(per_row) / len(per_row)


@pytest.mark.parametrize("dr_grpo", [False, True])
def test_the_on_policy_gradient_is_the_advantage_weighted_log_likelihood_gradient(dr_grpo):
    model, params, batch = setup()
    advantages = jnp.asarray([1.5, -0.5, -1.0, 0.0])
    batch = {**batch, "advantages": advantages}
    config = GRPOConfig(group_size=2, dr_grpo=dr_grpo)
    grads = jitted(jax.grad(lambda p, b: grpo_loss(p, model, b, config=config, max_new_tokens=8)[0]))(params, batch)
    expected = jitted(jax.grad(lambda p, _: reference_loss(p, model, advantages[:3], dr_grpo, 8)))(params, None)
    for got, want in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-7)


def test_clipping_cuts_the_gradient_and_is_counted():
    model, params, batch = setup()
    logp = jitted(lambda p, b: token_logprobs(p, model, b))(params, batch)
    config = GRPOConfig(group_size=2, clip_low=0.2, clip_high=0.2)
    loss_of = jitted(lambda p, b: grpo_loss(p, model, b, config=config, max_new_tokens=8))
    # The sampling policy gave every token e^-1 of today's probability: ratio e > 1.2.
    clipped = {**batch, "advantages": jnp.ones(4), "old_logprobs": logp - 1.0}
    loss, metrics = loss_of(params, clipped)
    grads = jitted(jax.grad(lambda p, b: grpo_loss(p, model, b, config=config, max_new_tokens=8)[0]))(params, clipped)
    assert float(metrics["clip_fraction"]) == 1.0
    assert float(loss) == pytest.approx(-1.2, rel=1e-5)  # -clip(ratio) x A on every token
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(grads))
    # A negative advantage is not clipped above: the ratio's gradient flows.
    negative = {**clipped, "advantages": -jnp.ones(4)}
    _, metrics = loss_of(params, negative)
    assert float(metrics["clip_fraction"]) == 0.0


def test_k3_kl_is_zero_at_the_reference_and_positive_away_from_it():
    model, params, batch = setup()
    logp = jitted(lambda p, b: token_logprobs(p, model, b))(params, batch)
    config = GRPOConfig(group_size=2, kl_coef=0.5)
    loss_of = jitted(lambda p, b: grpo_loss(p, model, b, config=config, max_new_tokens=8))
    at = {**batch, "advantages": jnp.zeros(4), "ref_logprobs": logp}
    _, metrics = loss_of(params, at)
    assert float(metrics["kl"]) == pytest.approx(0.0, abs=1e-7)
    away = {**at, "ref_logprobs": logp - 0.3}
    loss, metrics = loss_of(params, away)
    k3 = np.exp(-0.3) + 0.3 - 1
    assert float(metrics["kl"]) == pytest.approx(k3, rel=1e-5)
    assert float(loss) == pytest.approx(0.5 * k3, rel=1e-5)


def test_a_group_of_one_is_refused():
    with pytest.raises(ValueError, match="group_size must be at least 2"):
        GRPOConfig(group_size=1)
