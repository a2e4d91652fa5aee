"""Attention's implementations and the choice among them (ModelConfig.attention_impl).

    xla     the reference: a dense boolean mask (causal by position, within the
            segment, within the window) and jax.nn.dot_product_attention, or the
            scores capped by hand for Gemma 2's logit soft-cap
    splash  TPU: Pallas' splash attention kernel, causal by index and within the
            segment (segment ids), a local mask for sliding layers, the soft-cap
            in the kernel, grouped kv heads natively, values narrower than the
            keys (DeepSeek-V2's 192/128) as they are
    cudnn   NVIDIA GPUs: cuDNN's fused kernel through jax.nn.dot_product_attention;
            what cuDNN does not take (float32, soft-capping, odd head sizes) falls
            back to xla and the reason is logged once
    auto    splash on TPU, cudnn on GPU, xla elsewhere; where splash cannot take
            the shapes it falls back to xla and logs why

Only self-attention without a cache (training, scoring) has the choice;
decoding with a KV cache always runs xla. splash and cudnn mask causally by
index, which equals the reference's causal-by-position mask when positions
count up by one from each segment's start: the trainer's packing and the
decoder's default positions.

splash needs the sequence length to be a multiple of 128 (its kv block is a
multiple of the TPU's 128 lanes); its blocks are the largest multiple of 128
up to `SplashSettings.block_size` that divides the length. The kernel runs per
device: under a mesh (jax.set_mesh) it is wrapped in shard_map with the specs
the active logical axis rules give "batch", "length", "heads", "kv_heads" and
"head_dim", so it follows whatever mesh and rules the run configures; the
length and head_dim axes must stay whole. Without a mesh it runs directly.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as splash

Array = jax.Array

log = logging.getLogger(__name__)

TPU_LANES = 128
# The logical names of q's and of grouped k/v's dimensions (as layers.py constrains them).
Q_AXES = ("batch", "length", "heads", "head_dim")
KV_AXES = ("batch", "length", "kv_heads", "head_dim")


class UnsupportedAttention(ValueError):
    """The attention implementation asked for cannot run here or on these shapes."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SplashSettings:
    """How splash attention runs. `block_size`: the q and kv tile (a multiple of
    128; smaller when it does not divide the length). `interpret`: run the
    kernel in Pallas' interpret mode, on any backend (CPU tests; slow).
    Bind in gin as `SplashSettings.interpret = True`."""

    block_size: int = 512
    interpret: bool = False

    def __post_init__(self):
        if self.block_size < TPU_LANES or self.block_size % TPU_LANES:
            raise ValueError(f"SplashSettings.block_size must be a positive multiple of {TPU_LANES}, "
                             f"got {self.block_size}")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class XlaAttentionSettings:
    """How the xla implementation runs. `query_block`: when positive and it divides
    the length, the queries go `query_block` rows at a time through a rematerialised
    lax.map, so the [batch, heads, length, length] scores, their softmax and their
    gradients exist one block of rows at a time (length / query_block times less
    memory, the same arithmetic: the blocks are not skipped where the causal mask
    empties them). 0: all rows at once. Bind in gin as
    `XlaAttentionSettings.query_block = 256`."""

    query_block: int = 0

    def __post_init__(self):
        if self.query_block < 0:
            raise ValueError(f"XlaAttentionSettings.query_block must be 0 or positive, got {self.query_block}")


def attention_mask(q_positions: Array, k_positions: Array, q_segments: Array | None,
                   k_segments: Array | None, window: int | None) -> Array:
    """[batch, 1, q, k] booleans: causal by position, within a segment (packing),
    within the window (sliding layers)."""
    mask = k_positions[:, None, :] <= q_positions[:, :, None]
    if q_segments is not None:
        mask &= q_segments[:, :, None] == k_segments[:, None, :]
    if window is not None:
        mask &= k_positions[:, None, :] > q_positions[:, :, None] - window
    return mask[:, None, :, :]


def xla_attention(q: Array, k: Array, v: Array, mask: Array, scale: float, softcap: float | None) -> Array:
    """The reference. q [b, t, heads, d], k [b, s, kv_heads, d], v [b, s, kv_heads, dv]
    with dv <= d: grouped-query attention under `mask`. Without soft-capping it is
    jax.nn.dot_product_attention, which wants one head size, so narrower values get
    zero columns (they only add zero outputs, cut off after); with it (Gemma 2) the
    scores are capped by hand."""
    if softcap is None:
        width = v.shape[-1]
        if width < k.shape[-1]:
            v = jnp.pad(v, [(0, 0)] * 3 + [(0, k.shape[-1] - width)])
        return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale)[..., :width]
    groups = q.shape[2] // k.shape[2]
    k = jnp.repeat(k, groups, axis=2)
    v = jnp.repeat(v, groups, axis=2)
    scores = jnp.einsum("bthd,bshd->bhts", q, k, preferred_element_type=jnp.float32) * scale
    scores = jnp.tanh(scores / softcap) * softcap
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhts,bshd->bthd", weights, v)


def blocked_xla_attention(q: Array, k: Array, v: Array, positions: Array, segments: Array | None,
                          window: int | None, scale: float, softcap: float | None, block: int) -> Array:
    """xla_attention of self-attention, `block` query rows at a time (see XlaAttentionSettings);
    each block sees every key, so its rows are exactly the reference's."""
    batch, length = q.shape[:2]
    blocks = length // block

    def by_block(x):  # [b, t, ...] -> [blocks, b, block, ...]
        return jnp.swapaxes(x.reshape(batch, blocks, block, *x.shape[2:]), 0, 1)

    @jax.checkpoint
    def rows(args):
        q_block, q_positions, q_segments = args
        mask = attention_mask(q_positions, positions, q_segments if segments is not None else None, segments,
                              window)
        return xla_attention(q_block, k, v, mask, scale, softcap)

    block_segments = by_block(segments) if segments is not None else by_block(jnp.zeros_like(positions))
    out = jax.lax.map(rows, (by_block(q), by_block(positions), block_segments))
    return jnp.swapaxes(out, 0, 1).reshape(batch, length, *out.shape[3:])


def self_attention(q: Array, k: Array, v: Array, positions: Array, segments: Array | None, *, impl: str,
                   scale: float, softcap: float | None = None, window: int | None = None,
                   splash_settings: SplashSettings | None = None) -> Array:
    """Causal self-attention of a batch of rows with themselves, by `impl`
    (one of config.ATTENTION_IMPLS). q [b, t, heads, d], k [b, t, kv_heads, d],
    v [b, t, kv_heads, dv] (dv <= d), positions and segments [b, t];
    `splash_settings` defaults to SplashSettings() as gin binds it."""
    platform = target_platform()
    settings = splash_settings or SplashSettings()
    if impl == "auto":
        impl = {"tpu": "splash", "gpu": "cudnn"}.get(platform, "xla")
        if impl == "splash" and (reason := _splash_unsupported(q)):
            _log_fallback("splash", reason)
            impl = "xla"
    if impl == "splash":
        if platform != "tpu" and not settings.interpret:
            raise UnsupportedAttention(
                f"attention_impl='splash' runs on TPU; this computation is for {platform} devices. Use "
                "attention_impl='xla' (or 'auto'), or for tests bind SplashSettings.interpret = True")
        if reason := _splash_unsupported(q):
            raise UnsupportedAttention(f"attention_impl='splash': {reason}; use attention_impl='xla' or 'auto'")
        return _splash(q, k, v, segments, scale, softcap, window, settings)
    if impl == "cudnn":
        return _cudnn(q, k, v, positions, segments, scale, softcap, window, platform)
    if impl != "xla":
        raise UnsupportedAttention(f"attention_impl must be auto, xla, splash or cudnn, got {impl!r}")
    return xla_self_attention(q, k, v, positions, segments, scale, softcap, window)


def xla_self_attention(q: Array, k: Array, v: Array, positions: Array, segments: Array | None, scale: float,
                       softcap: float | None, window: int | None) -> Array:
    """The xla implementation of self_attention, in query blocks where XlaAttentionSettings asks."""
    block = XlaAttentionSettings().query_block
    if 0 < block < q.shape[1] and q.shape[1] % block == 0:
        return blocked_xla_attention(q, k, v, positions, segments, window, scale, softcap, block)
    return xla_attention(q, k, v, attention_mask(positions, positions, segments, segments, window), scale, softcap)


def parameter_free_impl(module: nn.Module, impl: str) -> str:
    """`impl` for an attention module's call, xla while it initialises: attention
    has no parameters, so the numbers of an init do not matter, and an init runs on
    a one-token dummy batch that the fused kernels do not take."""
    return "xla" if module.is_initializing() else impl


def target_platform() -> str:
    """The platform the computation is for: the active mesh's devices (a TPU
    topology compiled on a CPU host is for TPU), else the default backend."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and mesh.abstract_device is not None:
        return mesh.abstract_device.platform
    return jax.default_backend()


@functools.cache
def _log_fallback(impl: str, reason: str) -> None:
    # Cached: every layer traces the same choice; one line per distinct reason is enough.
    log.warning("attention: %s is not used, falling back to xla: %s", impl, reason)


# splash -------------------------------------------------------------------------------------------------------

def _splash_unsupported(q: Array) -> str | None:
    """Why splash cannot take these shapes under the active mesh and rules, or None."""
    batch, length, heads, _ = q.shape
    if length % TPU_LANES:
        return (f"the sequence length ({length}) must be a multiple of {TPU_LANES} (pad the inputs to one, "
                f"e.g. {-(-length // TPU_LANES) * TPU_LANES})")
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return None
    q_spec = nn.logical_to_mesh_axes(Q_AXES)
    if q_spec[1] is not None or q_spec[3] is not None:
        return (f"the rules shard length ({q_spec[1]}) or head_dim ({q_spec[3]}); the kernel needs whole "
                "sequences and heads on each device")
    for name, size, axes in (("batch", batch, q_spec[0]), ("heads", heads, q_spec[2])):
        shards = _shards(axes, mesh)
        if size % shards:
            return f"{name} ({size}) does not split over the {shards} devices of mesh axes {axes}"
    return None


def _shards(axes, mesh) -> int:
    names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    return math.prod(mesh.shape[name] for name in names)


def _splash(q: Array, k: Array, v: Array, segments: Array | None, scale: float, softcap: float | None,
            window: int | None, settings: SplashSettings) -> Array:
    length = q.shape[1]
    block = max(size for size in range(TPU_LANES, min(settings.block_size, length) + 1, TPU_LANES)
                if length % size == 0)
    # The kernel takes no scale: the queries carry it (in float32, then back to their dtype).
    q = (q.astype(jnp.float32) * scale).astype(q.dtype)
    run = functools.partial(_splash_per_device, block=block, softcap=softcap, window=window,
                            interpret=settings.interpret)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return run(q, k, v, segments)
    q_spec = nn.logical_to_mesh_axes(Q_AXES)
    # Keys as many as the queries are the queries' heads (DeepSeek names them so); fewer are kv_heads.
    kv_spec = nn.logical_to_mesh_axes(KV_AXES) if k.shape[2] < q.shape[2] else q_spec
    if kv_spec[2] != q_spec[2] or k.shape[2] % _shards(kv_spec[2], mesh):
        # kv heads placed unlike the q heads (replicated while the q heads are split over tensor, or
        # fewer than the devices they are split over): a device's q heads would pair with the wrong
        # kv heads, so give every q head its own.
        groups = q.shape[2] // k.shape[2]
        k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
        kv_spec = q_spec
    if segments is None:
        return jax.shard_map(lambda q, k, v: run(q, k, v, None), mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec),
                             out_specs=q_spec, check_vma=False)(q, k, v)
    segment_spec = jax.sharding.PartitionSpec(*q_spec[:2])
    return jax.shard_map(run, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, segment_spec), out_specs=q_spec,
                         check_vma=False)(q, k, v, segments)


def _splash_per_device(q: Array, k: Array, v: Array, segments: Array | None, *, block: int,
                       softcap: float | None, window: int | None, interpret: bool) -> Array:
    """The kernel on this device's rows and heads, [b, t, heads, d] in and out."""
    length, heads = q.shape[1], q.shape[2]
    shape = (length, length)
    # LocalMask's window is (left, right) inclusive: window - 1 earlier keys and none later.
    mask = splash.CausalMask(shape) if window is None else splash.LocalMask(shape, (window - 1, 0), offset=0)
    sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                              block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
    kernel = splash.make_splash_mha(splash.MultiHeadMask([mask] * heads), block_sizes=sizes, head_shards=1,
                                    q_seq_shards=1, attn_logits_soft_cap=softcap, interpret=interpret)
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))  # the kernel wants [heads, length, d] per row
    if segments is None:
        out = jax.vmap(kernel)(q, k, v)
    else:
        segments = segments.astype(jnp.int32)
        out = jax.vmap(kernel)(q, k, v, splash.SegmentIds(segments, segments))
    return out.transpose(0, 2, 1, 3)


# cuDNN --------------------------------------------------------------------------------------------------------

def _cudnn(q: Array, k: Array, v: Array, positions: Array, segments: Array | None, scale: float,
           softcap: float | None, window: int | None, platform: str) -> Array:
    if platform != "gpu":
        raise UnsupportedAttention(f"attention_impl='cudnn' needs an NVIDIA GPU; this computation is for "
                                   f"{platform} devices. Use attention_impl='xla' (or 'auto')")
    if reason := _cudnn_unsupported(q, segments, softcap):
        _log_fallback("cudnn", reason)
        return xla_self_attention(q, k, v, positions, segments, scale, softcap, window)
    width = v.shape[-1]
    if width < k.shape[-1]:
        v = jnp.pad(v, [(0, 0)] * 3 + [(0, k.shape[-1] - width)])
    # Causal by index is cuDNN's own mask (it skips the blocks above the diagonal); packing adds a
    # same-segment mask, which cuDNN takes as an additive bias.
    same_segment = None if segments is None else (segments[:, :, None] == segments[:, None, :])[:, None]
    out = jax.nn.dot_product_attention(q, k, v, mask=same_segment, scale=scale, is_causal=True,
                                       local_window_size=None if window is None else (window - 1, 0),
                                       implementation="cudnn")
    return out[..., :width]


def _cudnn_unsupported(q: Array, segments: Array | None, softcap: float | None) -> str | None:
    """Why cuDNN's fused attention cannot take this, or None (its limits as jax 0.10 checks them)."""
    device = jax.devices("gpu")[0]
    if "cuda" not in device.client.platform_version.lower():
        return f"cuDNN is for NVIDIA GPUs, not {device.client.platform_version}"
    if softcap is not None:
        return "cuDNN's fused attention has no logit soft-cap"
    if q.dtype not in (jnp.bfloat16, jnp.float16):
        return f"cuDNN's fused attention takes bfloat16 or float16, not {q.dtype}"
    hopper = tuple(int(part) for part in device.compute_capability.split(".")) >= (9, 0)
    largest = 256 if hopper else 128
    head_dim = q.shape[-1]
    if head_dim > largest or head_dim % 8:
        return f"the head size ({head_dim}) must be a multiple of 8 up to {largest} on this GPU"
    if segments is not None and q.shape[1] % 2:
        return f"with packed segments (a mask) the sequence length ({q.shape[1]}) must be even"
    return None
