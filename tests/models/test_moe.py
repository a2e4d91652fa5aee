"""The dropless MoE (tokens sorted by expert, grouped matmuls) against the dense
reference: logits and every gradient, uneven routing, bfloat16; its grouped
matmul both ways (jax.lax.ragged_dot, and megablox in Pallas' interpret mode)
alike; expert parallelism on 8 CPU devices: the single-device losses, with the
expert weights split over the experts axis, and megablox's results; and
DeepSeek-V2-Lite's MoE layer compiled for a TPU v5p chip: megablox's kernels,
and XLA's flops at the active experts' count."""

import contextlib
import os
import re
from pathlib import Path

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codeio_jax.models.config import from_hf_config
from codeio_jax.models.decoder import Decoder, init_params
from codeio_jax.models.grouped_matmul import GroupedMatmulSettings, UnsupportedGroupedMatmul, grouped_matmul
from codeio_jax.models.moe import MoE
from codeio_jax.models.presets import preset
from tests.fake_devices import run_on_cpu_devices

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def megablox_interpret():
    """The dropless path's grouped matmuls on megablox's kernels in interpret
    mode, as gin binds it."""
    with gin.unlock_config():
        gin.bind_parameter("GroupedMatmulSettings.interpret", True)
    try:
        yield
    finally:
        gin.clear_config()


def logits_and_grads(config, params, tokens):
    """Logits and the gradient of a fixed random projection of them (every
    logit matters, unlike a loss that saturates)."""
    probe = jax.random.normal(jax.random.PRNGKey(7), (*tokens.shape, config.vocab_size))

    def objective(p):
        logits = Decoder(config).apply({"params": p}, tokens)[0]
        return (logits.astype(jnp.float32) * probe).sum(), logits

    (_, logits), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(params)
    return logits, grads


def assert_close(actual, expected, what, tolerance=1e-5):
    """Within `tolerance` of the array's own scale: float32 sums taken in another
    order differ by rounding relative to the largest terms, not to each element."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(np.abs(expected).max(), 1e-30)
    assert np.abs(actual - expected).max() <= tolerance * scale, (what, np.abs(actual - expected).max(), scale)


def assert_trees_close(actual, expected, what=""):
    """Every array of two pytrees of one structure (outputs and gradients) close."""
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected), what
    jax.tree_util.tree_map_with_path(
        lambda path, a, b: assert_close(a, b, what + jax.tree_util.keystr(path)), actual, expected)


def assert_dropless_equals_dense(config, params, tokens):
    dense = logits_and_grads(config.replace(moe_impl="dense"), params, tokens)
    dropless = logits_and_grads(config.replace(moe_impl="dropless"), params, tokens)
    assert_trees_close(dropless, dense)


def tiny_params(config, seed=0):
    return nn.meta.unbox(init_params(config, jax.random.PRNGKey(seed)))


def test_default_is_dropless():
    assert preset("tiny_deepseek_v2").moe_impl == "dropless"


@pytest.mark.parametrize("length", [12, 3])
def test_dropless_equals_dense_on_the_tiny_preset(length):
    config = preset("tiny_deepseek_v2")
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, length), 0, config.vocab_size)
    if length == 3:  # 2 x 3 tokens x top-2 = 12 pairs over 8 experts: some get none in some layer
        assert 2 * length * config.moe.experts_per_token < 2 * config.moe.num_experts
    assert_dropless_equals_dense(config, tiny_params(config), tokens)


@pytest.mark.parametrize("case", ["lite", "q_lora"])
def test_dropless_equals_dense_on_the_transformers_parity_config(case, tmp_path):
    pytest.importorskip("torch")
    from codeio_jax.models import convert
    from tests.models.test_deepseek import tiny_deepseek

    tiny_deepseek(case, tmp_path)
    config, params = convert.load_hf(tmp_path)
    tokens = jax.random.randint(jax.random.PRNGKey(2), (3, 10), 0, config.vocab_size)
    assert_dropless_equals_dense(config, params, tokens)


def moe_output_and_grads(config, params, x):
    def objective(p, x):
        out = MoE(config).apply({"params": p}, x)
        return (out * jnp.cos(jnp.arange(out.size).reshape(out.shape))).sum(), out

    (_, out), grads = jax.jit(jax.value_and_grad(objective, argnums=(0, 1), has_aux=True))(params, x)
    return out, grads


def uneven_routing_case():
    """Identical tokens choose the same top-k: two experts take every token, the
    other six none."""
    config = preset("tiny_deepseek_v2")
    x = jnp.broadcast_to(jax.random.normal(jax.random.PRNGKey(3), (config.hidden_size,)), (2, 9, config.hidden_size))
    params = nn.meta.unbox(MoE(config).init(jax.random.PRNGKey(4), x)["params"])
    chosen = np.unique(np.asarray(jax.lax.top_k(x @ params["gate"]["kernel"], config.moe.experts_per_token)[1]))
    assert len(chosen) == config.moe.experts_per_token
    return config, params, x, chosen


def test_uneven_routing_every_token_on_the_same_experts():
    config, params, x, chosen = uneven_routing_case()
    dense = moe_output_and_grads(config.replace(moe_impl="dense"), params, x)
    dropless = moe_output_and_grads(config, params, x)
    assert_trees_close(dropless, dense)
    # The experts nobody chose get no gradient; the chosen ones do.
    unused = np.setdiff1d(np.arange(config.moe.num_experts), chosen)
    gate_grad = np.asarray(dropless[1][0]["experts"]["gate_proj"])
    assert np.all(gate_grad[unused] == 0) and np.any(gate_grad[chosen] != 0)


def uses_megablox(config, params, tokens) -> bool:
    """Whether the model's forward and backward run Pallas kernels (megablox's)."""
    jaxpr = jax.make_jaxpr(jax.grad(lambda p: Decoder(config).apply({"params": p}, tokens)[0].sum()))(params)
    return "pallas_call" in str(jaxpr)


def test_megablox_equals_ragged_dot_and_dense_on_the_tiny_preset():
    config = preset("tiny_deepseek_v2")
    params = tiny_params(config)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 12), 0, config.vocab_size)
    dense = logits_and_grads(config.replace(moe_impl="dense"), params, tokens)
    ragged = logits_and_grads(config, params, tokens)
    assert not uses_megablox(config, params, tokens)
    with megablox_interpret():
        assert uses_megablox(config, params, tokens)
        megablox = logits_and_grads(config, params, tokens)
    assert_trees_close(megablox, ragged, "against ragged_dot ")
    assert_trees_close(megablox, dense, "against dense ")


def test_megablox_equals_ragged_dot_and_dense_on_uneven_routing():
    config, params, x, chosen = uneven_routing_case()
    dense = moe_output_and_grads(config.replace(moe_impl="dense"), params, x)
    ragged = moe_output_and_grads(config, params, x)
    with megablox_interpret():
        megablox = moe_output_and_grads(config, params, x)
    assert_trees_close(megablox, ragged, "against ragged_dot ")
    assert_trees_close(megablox, dense, "against dense ")
    unused = np.setdiff1d(np.arange(config.moe.num_experts), chosen)
    assert np.all(np.asarray(megablox[1][0]["experts"]["down_proj"])[unused] == 0)


def test_megablox_refuses_what_it_cannot_tile():
    settings = GroupedMatmulSettings(tile=128, interpret=True)
    weights = jnp.zeros((2, 200, 128))
    with pytest.raises(UnsupportedGroupedMatmul, match=r"k dimension \(200\).*pad it to 256"):
        grouped_matmul(jnp.zeros((128, 200)), weights, jnp.array([64, 64], jnp.int32), settings)
    with pytest.raises(UnsupportedGroupedMatmul, match="multiple of 128, got 100"):
        grouped_matmul(jnp.zeros((100, 128)), jnp.zeros((2, 128, 128)), jnp.array([50, 50], jnp.int32), settings)
    with pytest.raises(ValueError, match="multiple of 128"):
        GroupedMatmulSettings(tile=96)


def test_bfloat16_runs_and_stays_near_float32():
    config = preset("tiny_deepseek_v2")
    params = tiny_params(config)
    tokens = jax.random.randint(jax.random.PRNGKey(5), (2, 8), 0, config.vocab_size)
    reference = Decoder(config).apply({"params": params}, tokens)[0]
    for impl in ("dropless", "dense"):
        low = config.replace(dtype="bfloat16", moe_impl=impl)
        logits, grads = logits_and_grads(low, params, tokens)
        assert logits.dtype == jnp.bfloat16
        assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))
        np.testing.assert_allclose(np.asarray(logits, np.float32), reference, atol=0.05)


def test_group_limited_routing_is_refused():
    v2 = dict(model_type="deepseek_v2", vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
              n_routed_experts=160, n_shared_experts=2, num_experts_per_tok=6, moe_intermediate_size=24)
    with pytest.raises(ValueError, match="group_limited_greedy.*not supported"):
        from_hf_config({**v2, "topk_method": "group_limited_greedy", "n_group": 8, "topk_group": 3})
    assert from_hf_config({**v2, "topk_method": "greedy", "n_group": 1, "topk_group": 1}).moe.num_experts == 160


EXPERT_PARALLEL = """
import json, os, sys
sys.path.insert(0, {repo!r})
import flax.linen as nn
import jax
import numpy as np
from codeio_jax.models.presets import preset
from codeio_jax.training import partitioning
from codeio_jax.training.input import SyntheticInput
from codeio_jax.training.optimizer import OptimizerConfig
from codeio_jax.training.partitioning import MeshConfig
from codeio_jax.training.trainer import build_step, train

assert jax.device_count() == 8, jax.devices()
config = preset("tiny_deepseek_v2")
optimizer = OptimizerConfig(learning_rate=1e-2, warmup_steps=1)
meshes = {{"single": MeshConfig(data=1), "data+experts": MeshConfig(data=2, experts=4),
          "fsdp+experts": MeshConfig(data=1, fsdp=2, experts=4),
          "fsdp+experts+tensor": MeshConfig(data=1, fsdp=2, experts=2, tensor=2)}}
result = {{"losses": {{}}, "specs": {{}}}}
for name, mesh in meshes.items():
    rows = []
    original = partitioning.make_mesh
    if name == "single":  # a mesh over the first device only
        partitioning.make_mesh = lambda cfg, devices=None: original(cfg, jax.devices()[:1])
    train(model_dir=os.path.join({tmp!r}, name), model=config, steps=4, log_every=1, compute_dtype="float32",
          inputs=SyntheticInput(config.vocab_size, length=16, batch_size=8), mesh=mesh, optimizer=optimizer,
          checkpoint_every=0, on_log=lambda row: rows.append(row["loss"]))
    partitioning.make_mesh = original
    result["losses"][name] = rows
    if name == "single":
        continue
    setup = build_step(config, mesh, optimizer, 4)
    for part in ("params", "opt_state"):
        leaves = jax.tree_util.tree_flatten_with_path(getattr(setup.state_shardings, part))[0]
        result["specs"][name + " " + part] = [
            [jax.tree_util.keystr(path), str(sharding.spec[0]), sharding.shard_shape((8, 64, 64))[0]]
            for path, sharding in leaves
            if any(f"['experts']['{{kernel}}']" in jax.tree_util.keystr(path) for kernel in ("gate_proj", "down_proj"))]
# The compiled step never gathers the expert weights whole (8 experts) over the experts axis.
setup = build_step(config, meshes["data+experts"], optimizer, 4, compute_dtype="float32")
batch = {{key: jax.ShapeDtypeStruct((8, 16), np.int32, sharding=setup.batch_sharding)
         for key in ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights",
                     "decoder_segment_ids", "decoder_positions")}}
with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
    hlo = setup.step_fn.lower(setup.abstract_state(), batch, None).compile().as_text()
result["gathers"] = [line.strip()[:200] for line in hlo.splitlines()
                     if "all-gather" in line and ("[8,64,32]" in line or "[8,32,64]" in line)]
print(json.dumps(result))
"""


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_expert_parallel_layouts_give_the_single_device_losses(tmp_path):
    result = run_on_cpu_devices(EXPERT_PARALLEL.format(repo=str(REPO), tmp=str(tmp_path)), 8, timeout=1200)
    losses = result["losses"]
    single = losses.pop("single")
    assert len(single) == 4 and len(set(single)) == 4  # the updates change the loss
    for name, rows in losses.items():
        assert rows == pytest.approx(single, rel=2e-5), name
    for name, leaves in result["specs"].items():
        assert len(leaves) >= 4, name  # gate and down of 2 MoE layers (params; Adam's slots twice over)
        experts_per_device = 8 // {"data+experts": 4, "fsdp+experts": 4, "fsdp+experts+tensor": 2}[name.split()[0]]
        for path, axis, shard in leaves:
            assert (axis, shard) == ("experts", experts_per_device), (name, path)
    assert result["gathers"] == []


EXPERT_PARALLEL_MEGABLOX = """
import json, sys
sys.path.insert(0, {repo!r})
import flax.linen as nn
import gin
import jax
import numpy as np
from codeio_jax.models.moe import MoE
from codeio_jax.models.presets import preset
from codeio_jax.training.partitioning import DEFAULT_RULES
from tests.models.test_moe import moe_output_and_grads

assert jax.device_count() == 8, jax.devices()
config = preset("tiny_deepseek_v2")
x = jax.random.normal(jax.random.PRNGKey(3), (8, 6, config.hidden_size))
params = nn.meta.unbox(MoE(config).init(jax.random.PRNGKey(4), x)["params"])
dense = moe_output_and_grads(config.replace(moe_impl="dense"), params, x)
gin.bind_parameter("GroupedMatmulSettings.interpret", True)
result = {{}}
for name, shape in {{"data+experts": (2, 1, 4, 1), "fsdp+experts+tensor": (1, 2, 2, 2)}}.items():
    mesh = jax.make_mesh(shape, ("data", "fsdp", "experts", "tensor"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 4)
    with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
        pallas = "pallas_call" in str(jax.make_jaxpr(lambda p: MoE(config).apply({{"params": p}}, x))(params))
        megablox = moe_output_and_grads(config, params, x)
    errors = jax.tree_util.tree_map(
        lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max()),
        megablox, dense)
    result[name] = {{"pallas": pallas, "worst": max(jax.tree_util.tree_leaves(errors))}}
print(json.dumps(result))
"""


@pytest.mark.timeout(600)
def test_megablox_under_expert_parallelism_equals_dense():
    """8 CPU devices, the experts split 4 and 2 ways (with fsdp and tensor):
    megablox (interpret mode) on each device's own experts gives the dense
    reference's output and gradients."""
    result = run_on_cpu_devices(EXPERT_PARALLEL_MEGABLOX.format(repo=str(REPO)), 8)
    assert set(result) == {"data+experts", "fsdp+experts+tensor"}
    for name, layout in result.items():
        assert layout["pallas"], name
        assert layout["worst"] <= 1e-5, (name, layout["worst"])


def compiled_moe_step(config, mesh, tokens):
    """The MoE layer's forward and backward (input and weight gradients)
    compiled for `mesh`, `tokens` per device (one row each) and the experts
    split over its experts axis: HLO text and XLA's flops."""
    from codeio_jax.training.partitioning import DEFAULT_RULES

    x = jax.ShapeDtypeStruct((mesh.devices.size, tokens, config.hidden_size), jnp.float32)
    boxed = jax.eval_shape(lambda: MoE(config).init(jax.random.PRNGKey(0), jnp.zeros(x.shape))["params"])
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, DEFAULT_RULES)
    params = jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                          nn.meta.unbox(boxed), shardings)
    with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
        grad = jax.grad(lambda p, x: MoE(config).apply({"params": p}, x).sum(), argnums=(0, 1))
        compiled = jax.jit(grad).lower(params, x).compile()
    return compiled.as_text(), compiled.cost_analysis()["flops"]


def megablox_kernels(hlo: str) -> dict[str, int]:
    """How many of megablox's gmm and tgmm kernels (TPU custom calls) the HLO runs."""
    names = re.findall(r"%(t?gmm)[.\w]* = .*custom_call_target=\"tpu_custom_call\"", hlo)
    return {kernel: names.count(kernel) for kernel in ("gmm", "tgmm")}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_megablox_compiles_for_tpu_v5p_and_xla_counts_the_active_experts():
    """Compiled for TPU v5p (libtpu on this host): the tiny preset's MoE layer
    and DeepSeek-V2-Lite's on one chip run 3 gmm kernels forward, 3 gmm (input
    gradients) and 3 tgmm (weight gradients) backward, and for V2-Lite XLA
    counts within 1.3x of the active experts' FLOPs (routed top-6, 2 shared,
    router); with the experts over 4 chips it still runs the kernels."""
    pytest.importorskip("libtpu")
    from jax.experimental import topologies

    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5p-8")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    devices = np.asarray(topologies.get_topology_desc(platform="tpu", topology_name="v5p:2x2x1").devices)
    axes = ("data", "fsdp", "experts", "tensor")
    one_chip = jax.sharding.Mesh(devices[:1].reshape(1, 1, 1, 1), axes)
    grouped = {"gmm": 6, "tgmm": 3}

    assert megablox_kernels(compiled_moe_step(preset("tiny_deepseek_v2"), one_chip, 128)[0]) == grouped

    lite, tokens = preset("deepseek_v2_lite"), 256
    hlo, flops = compiled_moe_step(lite, one_chip, tokens)
    assert megablox_kernels(hlo) == grouped
    moe, hidden = lite.moe, lite.hidden_size
    experts_per_token = moe.experts_per_token + moe.num_shared_experts
    active = 6 * tokens * (3 * hidden * moe.expert_intermediate_size * experts_per_token + hidden * moe.num_experts)
    assert flops <= 1.3 * active, flops / active
    assert flops >= 0.9 * active, flops / active  # the kernels do report their work

    four_chips = jax.sharding.Mesh(devices.reshape(1, 1, 4, 1), axes)
    assert megablox_kernels(compiled_moe_step(lite, four_chips, tokens)[0]) == grouped
