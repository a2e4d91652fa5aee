"""Attention implementations against the XLA reference: splash attention in
Pallas interpret mode on the CPU (kernel and whole decoder, forward and
gradients, one device and sharded over a CPU mesh), splash compiled for a TPU
v5p slice on this host, the choice `auto` makes, and the errors for what
cannot run."""

import logging
import os
import time
from pathlib import Path

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codeio_jax.models.attention import SplashSettings, UnsupportedAttention, XlaAttentionSettings, self_attention
from codeio_jax.models.config import MLAConfig
from codeio_jax.models.decoder import Decoder, init_params, logical_axes
from codeio_jax.models.presets import preset
from tests.fake_devices import run_on_cpu_devices

REPO = Path(__file__).resolve().parents[2]
INTERPRET = SplashSettings(block_size=128, interpret=True)
TOLERANCE = 1e-5  # float32, relative to the largest magnitude of the reference
# DeepSeek-V2's real per-head sizes (q/k 128 + 64, v 128) on a tiny model.
DEEPSEEK_HEADS = preset("tiny_deepseek_v2").replace(
    head_dim=192, num_layers=2, mla=MLAConfig(kv_lora_rank=32, qk_nope_head_dim=128, qk_rope_head_dim=64,
                                              v_head_dim=128))


def packed_row(length: int, lengths: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segments, positions and loss weights of a row packed as the trainer packs:
    ids 1, 2, ... with positions restarting at each, then padding (id 0, position 0)."""
    segments, positions = np.zeros(length, np.int32), np.zeros(length, np.int32)
    start = 0
    for number, size in enumerate(lengths, 1):
        segments[start:start + size] = number
        positions[start:start + size] = np.arange(size)
        start += size
    return segments, positions, (segments > 0).astype(np.float32)


def packed_batch(batch: int, length: int, packed: bool):
    if not packed:
        positions = np.broadcast_to(np.arange(length, dtype=np.int32), (batch, length))
        return None, jnp.asarray(positions), jnp.ones((batch, length))
    rows = [packed_row(length, (length // 3, length // 4 + length // 16 * i, length // 5)) for i in range(batch)]
    segments, positions, weights = (jnp.asarray(np.stack(parts)) for parts in zip(*rows))
    return segments, positions, weights


def assert_close(actual, expected, name=""):
    scale = max(1.0, float(jnp.max(jnp.abs(expected))))
    error = float(jnp.max(jnp.abs(actual - expected)))
    assert error <= TOLERANCE * scale, f"{name}: max error {error:.3g} at magnitude {scale:.3g}"


KERNEL_CASES = {
    # name: (batch, length, heads, kv_heads, head_dim, v_head_dim, softcap, window, packed)
    "causal, packed, GQA": (2, 256, 4, 2, 16, 16, None, None, True),
    "causal, one segment, MHA": (1, 128, 4, 4, 16, 16, None, None, False),
    "Gemma 2: window 16, soft-cap 50, packed": (1, 256, 4, 2, 16, 16, 50.0, 16, True),
    "DeepSeek-V2 heads: q/k 192, v 128, packed": (1, 128, 2, 2, 192, 128, None, None, True),
}


def kernel_case_arrays(case: str, seed: int):
    """q, k, v, an output cotangent, and the case's segments, positions and loss weights."""
    batch, length, heads, kv_heads, head_dim, v_dim, _, _, packed = KERNEL_CASES[case]
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    q = jax.random.normal(keys[0], (batch, length, heads, head_dim))
    k = jax.random.normal(keys[1], (batch, length, kv_heads, head_dim))
    v = jax.random.normal(keys[2], (batch, length, kv_heads, v_dim))
    cotangent = jax.random.normal(keys[3], (batch, length, heads, v_dim))
    return (q, k, v, cotangent, *packed_batch(batch, length, packed))


@pytest.mark.parametrize("case", sorted(KERNEL_CASES))
def test_splash_kernel_matches_xla_forward_and_gradients(case):
    batch, length, heads, kv_heads, head_dim, v_dim, softcap, window, packed = KERNEL_CASES[case]
    q, k, v, cotangent, segments, positions, weights = kernel_case_arrays(case, 0)
    # Padding (segment 0) attends among itself differently (all by position 0 against causal by
    # index) and carries no loss: compare the real tokens, and weight the gradients by them.
    cotangent = cotangent * weights[:, :, None, None]
    real = weights[:, :, None, None] > 0

    def attention(impl):
        def run(q, k, v):
            return self_attention(q, k, v, positions, segments, impl=impl, scale=head_dim ** -0.5, softcap=softcap,
                                  window=window, splash_settings=INTERPRET)
        return run

    outputs, grads = {}, {}
    for impl in ("xla", "splash"):
        out, pullback = jax.vjp(jax.jit(attention(impl)), q, k, v)
        outputs[impl], grads[impl] = jnp.where(real, out, 0.0), pullback(cotangent)
    assert outputs["splash"].shape == (batch, length, heads, v_dim)
    assert_close(outputs["splash"], outputs["xla"], "output")
    for name, actual, expected in zip("qkv", grads["splash"], grads["xla"]):
        assert_close(actual, expected, f"d{name}")


@pytest.mark.parametrize("case", sorted(KERNEL_CASES))
def test_xla_attention_by_query_blocks_matches_all_rows_at_once(case):
    """XlaAttentionSettings.query_block: every row, padding included, and every gradient."""
    head_dim, softcap, window = (KERNEL_CASES[case][i] for i in (4, 6, 7))
    q, k, v, cotangent, segments, positions, _ = kernel_case_arrays(case, 1)

    def attention(q, k, v):
        return self_attention(q, k, v, positions, segments, impl="xla", scale=head_dim ** -0.5, softcap=softcap,
                              window=window)

    results = {}
    for block in (0, 64):
        with gin.unlock_config():
            gin.bind_parameter("XlaAttentionSettings.query_block", block)
        try:
            # The settings are read when tracing: a fresh function each time, not jit's cached trace.
            out, pullback = jax.vjp(jax.jit(lambda q, k, v: attention(q, k, v)), q, k, v)
            results[block] = (out, *pullback(cotangent))
        finally:
            gin.clear_config()
    for name, actual, expected in zip(("output", "dq", "dk", "dv"), results[64], results[0]):
        assert_close(actual, expected, name)


def test_xla_attention_query_block_must_not_be_negative():
    with pytest.raises(ValueError, match="query_block must be 0 or positive"):
        XlaAttentionSettings(query_block=-1)


@pytest.fixture
def splash_interpret():
    """SplashSettings as gin binds it: interpret mode, 128-wide blocks."""
    with gin.unlock_config():
        gin.bind_parameter("SplashSettings.interpret", True)
        gin.bind_parameter("SplashSettings.block_size", 128)
    yield
    gin.clear_config()


DECODER_CASES = {
    "llama (GQA)": preset("tiny_llama"),
    "gemma2 (window 16 on even layers, soft-cap)": preset("tiny_gemma2").replace(sliding_window=16),
    "deepseek_v2 (tiny)": preset("tiny_deepseek_v2"),
    "deepseek_v2 (heads 192/128)": DEEPSEEK_HEADS,
}


@pytest.mark.parametrize("case", sorted(DECODER_CASES))
def test_decoder_with_splash_matches_xla_logits_and_gradients(case, splash_interpret):
    config = DECODER_CASES[case]
    batch, length = 2, 128
    params = nn.unbox(init_params(config, jax.random.PRNGKey(1)))
    tokens = jax.random.randint(jax.random.PRNGKey(2), (batch, length), 0, config.vocab_size)
    segments, positions, weights = packed_batch(batch, length, packed=True)

    def loss_and_logits(impl):
        model = Decoder(config.replace(attention_impl=impl))

        def run(params):
            logits, _ = model.apply({"params": params}, tokens, positions, segments)
            loss = jnp.sum(jax.nn.logsumexp(logits, -1) * weights) / jnp.sum(weights)
            return loss, jnp.where(weights[:, :, None] > 0, logits, 0.0)
        if impl == "splash":  # the kernel, not a quiet fallback
            assert "pallas_call" in str(jax.make_jaxpr(run)(params))
        return jax.jit(jax.value_and_grad(run, has_aux=True))(params)

    (loss_xla, logits_xla), grads_xla = loss_and_logits("xla")
    (loss_splash, logits_splash), grads_splash = loss_and_logits("splash")
    assert_close(logits_splash, logits_xla, "logits")
    assert abs(float(loss_splash - loss_xla)) <= TOLERANCE * abs(float(loss_xla))
    flat_xla = jax.tree_util.tree_flatten_with_path(grads_xla)[0]
    for (path, expected), actual in zip(flat_xla, jax.tree_util.tree_leaves(grads_splash)):
        assert_close(actual, expected, jax.tree_util.keystr(path))


def test_auto_on_the_cpu_is_xla_bit_for_bit():
    config = preset("tiny_gemma2")
    params = init_params(config, jax.random.PRNGKey(0))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 24), 0, config.vocab_size)
    segments, positions, _ = packed_batch(2, 24, packed=True)
    auto, xla = (np.asarray(jax.jit(Decoder(config.replace(attention_impl=impl)).apply)(
        {"params": params}, tokens, positions, segments)[0]) for impl in ("auto", "xla"))
    np.testing.assert_array_equal(auto, xla)


def qkv(length: int, heads: int = 4, kv_heads: int = 2, dtype=jnp.float32):
    shape = (2, length, heads, 16)
    return (jnp.ones(shape, dtype), jnp.ones((2, length, kv_heads, 16), dtype),
            jnp.ones((2, length, kv_heads, 16), dtype), jnp.zeros((2, length), jnp.int32))


def test_splash_on_the_cpu_without_interpret_mode_says_so():
    q, k, v, positions = qkv(128)
    with pytest.raises(UnsupportedAttention, match="runs on TPU; this computation is for cpu.*interpret = True"):
        self_attention(q, k, v, positions, None, impl="splash", scale=0.25, splash_settings=SplashSettings())


def test_splash_says_which_lengths_it_takes():
    q, k, v, positions = qkv(200)
    with pytest.raises(UnsupportedAttention, match=r"length \(200\) must be a multiple of 128.*e\.g\. 256"):
        self_attention(q, k, v, positions, None, impl="splash", scale=0.25, splash_settings=INTERPRET)
    with pytest.raises(ValueError, match="block_size must be a positive multiple of 128, got 96"):
        SplashSettings(block_size=96)


def test_cudnn_without_a_gpu_says_so():
    q, k, v, positions = qkv(128)
    with pytest.raises(UnsupportedAttention, match="'cudnn' needs an NVIDIA GPU; this computation is for cpu"):
        self_attention(q, k, v, positions, None, impl="cudnn", scale=0.25)


# TPU: compiled on this host for a v5p slice that libtpu describes ---------------------------------------------

@pytest.fixture(scope="module")
def tpu_mesh():
    """Four TPU v5p devices (v5p:2x2x1) as a mesh of the trainer's axes, data 2 x tensor 2."""
    pytest.importorskip("libtpu")
    from jax.experimental import topologies

    # libtpu probes the host for its TPU type and peers; say it is the slice asked for, alone.
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5p-8")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    # libtpu takes a host-wide lock that a TPU would need; compiling only, other processes may hold it too.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    devices = topologies.get_topology_desc(platform="tpu", topology_name="v5p:2x2x1").devices
    return jax.sharding.Mesh(np.asarray(devices).reshape(2, 1, 1, 2), ("data", "fsdp", "experts", "tensor"))


def lowered_attention(mesh, length: int, impl: str) -> str:
    from codeio_jax.training.partitioning import DEFAULT_RULES

    q, k, v, positions = qkv(length, dtype=jnp.bfloat16)
    abstract = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (q, k, v, positions, positions)]
    with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
        return jax.jit(lambda q, k, v, p, s: self_attention(q, k, v, p, s, impl=impl, scale=0.25)).lower(
            *abstract).as_text()


def test_auto_picks_splash_for_a_tpu_mesh_and_falls_back_where_it_cannot(tpu_mesh, caplog):
    assert "splash_mha_fwd" in lowered_attention(tpu_mesh, 256, "auto")
    with caplog.at_level(logging.WARNING, logger="codeio_jax.models.attention"):
        fallback = lowered_attention(tpu_mesh, 200, "auto")
    assert "splash" not in fallback
    assert "splash is not used, falling back to xla: the sequence length (200) must be a multiple of 128" \
        in caplog.text


@pytest.mark.slow
def test_decoder_forward_and_backward_with_splash_compile_for_tpu_v5p(tpu_mesh):
    from codeio_jax.training.partitioning import DEFAULT_RULES

    configs = {
        "llama (GQA, head 128)": preset("tiny_llama").replace(head_dim=128),
        "gemma2 (window 128, soft-cap)": preset("tiny_gemma2").replace(head_dim=128, sliding_window=128),
        "deepseek_v2 (heads 192/128)": DEEPSEEK_HEADS,
    }
    batch, length = 4, 512
    for name, config in configs.items():
        config = config.replace(dtype="bfloat16", attention_impl="splash")
        shapes = jax.eval_shape(lambda: nn.unbox(init_params(config, jax.random.PRNGKey(0))))
        placed = nn.logical_to_mesh_sharding(logical_axes(config), tpu_mesh, DEFAULT_RULES)
        params = jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                              shapes, placed)
        rows = jax.sharding.NamedSharding(tpu_mesh, nn.logical_to_mesh_axes(("batch", "length"), DEFAULT_RULES))
        tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32, sharding=rows)

        def loss(params, tokens, positions, segments):
            logits, _ = Decoder(config).apply({"params": params}, tokens, positions, segments)
            return jnp.mean(jax.nn.logsumexp(logits.astype(jnp.float32), -1))

        started = time.perf_counter()
        with jax.set_mesh(tpu_mesh), nn.logical_axis_rules(DEFAULT_RULES):
            compiled = jax.jit(jax.value_and_grad(loss)).lower(params, tokens, tokens, tokens).compile()
        logging.getLogger(__name__).info("%s: compiled in %.1f s", name, time.perf_counter() - started)
        hlo = compiled.as_text()
        for kernel in ("splash_mha_fwd_segmented", "splash_mha_dq_segmented", "splash_mha_dkv_segmented"):
            assert kernel in hlo, (name, kernel)


# Sharded over a CPU mesh: the shard_map specs follow the rules ---------------------------------------------------

SHARDED = """
import json, sys
sys.path.insert(0, {repo!r})
import flax.linen as nn, gin, jax, jax.numpy as jnp, numpy as np
from codeio_jax.models.decoder import Decoder, init_params
from codeio_jax.models.presets import preset
from codeio_jax.training.partitioning import DEFAULT_RULES, MeshConfig, make_mesh
from tests.models.test_attention import packed_batch

assert jax.device_count() == 4, jax.devices()
gin.bind_parameter("SplashSettings.interpret", True)
gin.bind_parameter("SplashSettings.block_size", 128)
# kv heads replicated while the q heads split over tensor: the kernel must pair them by global head.
REPLICATED_KV = tuple((name, None if name == "kv_heads" else axes) for name, axes in DEFAULT_RULES)
cases = {{"data 2 x tensor 2": (MeshConfig(data=2, tensor=2), DEFAULT_RULES),
         "fsdp 2 x tensor 2, kv heads replicated": (MeshConfig(data=1, fsdp=2, tensor=2), REPLICATED_KV)}}
config = preset("tiny_llama")
params = nn.unbox(init_params(config, jax.random.PRNGKey(1)))
tokens = jax.random.randint(jax.random.PRNGKey(2), (4, 128), 0, config.vocab_size)
segments, positions, weights = packed_batch(4, 128, packed=True)

def loss(impl):
    def run(params):
        logits, _ = Decoder(config.replace(attention_impl=impl)).apply({{"params": params}}, tokens, positions,
                                                                       segments)
        return jnp.sum(jax.nn.logsumexp(logits, -1) * weights) / jnp.sum(weights)
    return jax.jit(jax.value_and_grad(run))

reference_loss, reference_grads = loss("xla")(params)
errors = {{}}
for name, (mesh_config, rules) in cases.items():
    with jax.set_mesh(make_mesh(mesh_config)), nn.logical_axis_rules(rules):
        value, grads = loss("splash")(params)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(reference_grads))
    errors[name] = [abs(float(value - reference_loss)) / abs(float(reference_loss)),
                    max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree_util.tree_leaves(grads),
                        jax.tree_util.tree_leaves(reference_grads))) / max(scale, 1.0)]
print(json.dumps(errors))
"""


def test_splash_sharded_over_a_mesh_matches_xla_on_one_device():
    errors = run_on_cpu_devices(SHARDED.format(repo=str(REPO)), 4)
    assert len(errors) == 2
    for name, (loss_error, grad_error) in errors.items():
        assert loss_error <= TOLERANCE and grad_error <= TOLERANCE, (name, loss_error, grad_error)
