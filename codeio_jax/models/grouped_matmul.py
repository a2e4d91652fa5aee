"""Grouped matmul of rows sorted by group against a stack of weights, one per group.

    out[r] = lhs[r] @ rhs[g]    for each row r of group g (groups consecutive, sizes given)

Two implementations, one chosen by the devices the computation is for
(attention.target_platform: the active mesh's, else the default backend):

megablox (TPU)
    Pallas' megablox kernels, grouped both ways: `gmm` forward and for the
    input gradient, `tgmm` (a grouped transposed matmul) for the weight
    gradient. Only the row tiles of non-empty groups run, and each kernel gives
    XLA its flop count (2 x rows x k x n), so cost analysis sees grouped work in
    both passes. `GroupedMatmulSettings.interpret` runs the same kernels in
    Pallas' interpret mode on any backend (CPU tests; slow).
ragged_dot (elsewhere)
    `jax.lax.ragged_dot`. Its weight gradient is a ragged-contracting dot,
    which XLA (CPU, and TPU with libtpu 0.0.42) lowers to a masked dense
    product over every group: num_groups times the work.

What megablox takes, plainly: float32 or bfloat16 operands; a row count that
is a multiple of ROW_ALIGNMENT (callers pad their rows, see `padded_rows`);
contracted and output dimensions (k, n) that are either multiples of 128 or at
most `GroupedMatmulSettings.tile` (taken whole as one tile). In each of the
three products a tile, rows included, is the largest multiple of 128 up to
`GroupedMatmulSettings.tile` that divides its dimension: DeepSeek-V2-Lite's
hidden 2048 gets 512, its expert mlp 1408 (11 x 128) gets 128; the tiny
presets' 64 and 32 are whole tiles. Anything else raises
UnsupportedGroupedMatmul.

Both implementations return float32 and give rows past sum(group_sizes) zero
outputs and zero gradients.
"""

from __future__ import annotations

import dataclasses
import functools

import gin
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.megablox.gmm import gmm as gmm_kernel
from jax.experimental.pallas.ops.tpu.megablox.gmm import tgmm as tgmm_kernel

from codeio_jax.models.attention import target_platform

Array = jax.Array

TPU_LANES = 128
# megablox needs the row count to be a multiple of its row tile; padding to the
# smallest tile keeps the padding under 128 rows.
ROW_ALIGNMENT = TPU_LANES
MEGABLOX_DTYPES = (jnp.float32, jnp.bfloat16)


class UnsupportedGroupedMatmul(ValueError):
    """megablox cannot take these shapes or dtypes."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class GroupedMatmulSettings:
    """How the grouped matmuls run. `tile`: the largest tile of megablox's row,
    contracted and output dimensions (a multiple of 128). `interpret`: run the
    megablox kernels in Pallas' interpret mode, on any backend (CPU tests;
    slow). Bind in gin as `GroupedMatmulSettings.interpret = True`."""

    tile: int = 512
    interpret: bool = False

    def __post_init__(self):
        if self.tile < TPU_LANES or self.tile % TPU_LANES:
            raise ValueError(f"GroupedMatmulSettings.tile must be a positive multiple of {TPU_LANES}, "
                             f"got {self.tile}")

    def uses_megablox(self) -> bool:
        return self.interpret or target_platform() == "tpu"


def padded_rows(rows: int, settings: GroupedMatmulSettings) -> int:
    """The row count a buffer of `rows` rows needs for `grouped_matmul`."""
    if not settings.uses_megablox():
        return rows
    return -(-rows // ROW_ALIGNMENT) * ROW_ALIGNMENT


def grouped_matmul(lhs: Array, rhs: Array, group_sizes: Array, settings: GroupedMatmulSettings) -> Array:
    """lhs [m, k] (rows sorted by group), rhs [groups, k, n], group_sizes [groups]
    int32 with sum at most m: float32 [m, n], zero past the groups' rows."""
    if not settings.uses_megablox():
        return jax.lax.ragged_dot(lhs, rhs, group_sizes, preferred_element_type=jnp.float32)
    m, k = lhs.shape
    n = rhs.shape[-1]
    for name, array in (("rows", lhs), ("weights", rhs)):
        if array.dtype not in MEGABLOX_DTYPES:
            raise UnsupportedGroupedMatmul(f"megablox takes float32 or bfloat16 {name}, got {array.dtype}")
    if m % ROW_ALIGNMENT:
        raise UnsupportedGroupedMatmul(f"megablox needs a row count that is a multiple of {ROW_ALIGNMENT}, got {m} "
                                       "(pad the rows to padded_rows(m))")
    _tiling(m, k, n, settings)  # the shapes' errors at the call, not at differentiation
    return _megablox(lhs, rhs, group_sizes, settings)


# megablox's own VJP reuses the forward's (m, k, n) tiles for the input gradient,
# where k and n swap roles; DeepSeek-V2-Lite's 2048 and 1408 then share only
# 128-wide tiles. Each product here gets tiles for its own dimensions.
@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _megablox(lhs: Array, rhs: Array, group_sizes: Array, settings: GroupedMatmulSettings) -> Array:
    return _megablox_forward(lhs, rhs, group_sizes, settings)[0]


def _megablox_forward(lhs, rhs, group_sizes, settings):
    (m, k), n = lhs.shape, rhs.shape[-1]
    out = gmm_kernel(lhs, rhs, group_sizes, jnp.float32, _tiling(m, k, n, settings), interpret=settings.interpret)
    # megablox leaves the rows past the last group unwritten.
    return jnp.where(_in_groups(m, group_sizes), out, 0.0), (lhs, rhs, group_sizes)


def _megablox_backward(settings, residuals, grad):
    lhs, rhs, group_sizes = residuals
    (m, k), n = lhs.shape, rhs.shape[-1]
    grad_lhs = gmm_kernel(grad, rhs, group_sizes, lhs.dtype, _tiling(m, n, k, settings), transpose_rhs=True,
                          interpret=settings.interpret)
    grad_rhs = tgmm_kernel(lhs.swapaxes(0, 1), grad, group_sizes, rhs.dtype, _tiling(m, k, n, settings),
                           num_actual_groups=rhs.shape[0], interpret=settings.interpret)
    return jnp.where(_in_groups(m, group_sizes), grad_lhs, 0), grad_rhs, None


_megablox.defvjp(_megablox_forward, _megablox_backward)


def _in_groups(m: int, group_sizes: Array) -> Array:
    return (jnp.arange(m) < group_sizes.sum())[:, None]


def _tiling(m: int, k: int, n: int, settings: GroupedMatmulSettings) -> tuple[int, int, int]:
    return _tile("rows", m, settings.tile), _tile("k", k, settings.tile), _tile("n", n, settings.tile)


def _tile(name: str, size: int, largest: int) -> int:
    """The largest multiple of 128 up to `largest` dividing `size`, or `size`
    itself when it is no larger than `largest` (one whole tile)."""
    if size % TPU_LANES == 0:
        return max(t for t in range(TPU_LANES, min(largest, size) + 1, TPU_LANES) if size % t == 0)
    if size <= largest:
        return size
    raise UnsupportedGroupedMatmul(
        f"megablox needs the {name} dimension ({size}) to be a multiple of {TPU_LANES} or at most "
        f"GroupedMatmulSettings.tile ({largest}); pad it to {-(-size // TPU_LANES) * TPU_LANES}")
