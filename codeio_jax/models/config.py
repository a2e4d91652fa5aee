"""One decoder configuration with small switches per family.

A config says everything the forward pass needs; `from_hf_config` reads a
Hugging Face `config.json` (the older `rope_scaling`/`rope_theta` form and the
newer `rope_parameters` form alike) and `to_hf_config` writes one back for the
families we export. Presets give the paper's exact sizes and tiny test sizes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

FAMILIES = ("llama", "qwen2", "gemma2", "deepseek_v2")
REMAT_POLICIES = ("none", "full", "dots", "dots_with_no_batch_dims")
# auto: splash on TPU, cuDNN on GPU, XLA elsewhere (models/attention.py).
ATTENTION_IMPLS = ("auto", "xla", "splash", "cudnn")
# dropless: tokens sorted by expert, one grouped matmul per projection; dense: every
# expert on every token (the exact reference, num_experts / top_k times the FLOPs).
MOE_IMPLS = ("dropless", "dense")


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """Rotary embeddings: `kind` "default", "llama3" (Llama 3.1 frequency
    scaling) or "yarn" (DeepSeek-V2)."""

    theta: float = 10000.0
    kind: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float = 1.0
    mscale_all_dim: float = 0.0


@dataclasses.dataclass(frozen=True)
class MLAConfig:
    """DeepSeek-V2 multi-head latent attention: queries optionally through a
    low-rank bottleneck, keys and values through a compressed latent, and a
    decoupled RoPE key shared by all heads."""

    q_lora_rank: int | None = None
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128


@dataclasses.dataclass(frozen=True)
class MoEConfig:
    """DeepSeekMoE: shared experts always on, top-k of the routed ones."""

    num_experts: int = 64
    num_shared_experts: int = 2
    experts_per_token: int = 6
    expert_intermediate_size: int = 1408
    first_dense_layers: int = 1  # the first layers keep a dense MLP
    routed_scaling_factor: float = 1.0
    normalize_top_k: bool = False


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters (models/lora.py): each targeted projection W gains
    x -> (alpha / rank) * dropout(x) A B beside x W, A [*in, rank] and B [rank, *out],
    B starting at zero so a fresh adapter leaves the model as it was.

    targets: projection names (q_proj, k_proj, v_proj, o_proj, gate_proj,
      up_proj, down_proj; DeepSeek's q_a_proj, q_b_proj, kv_a_proj_with_mqa), or
      "all-linear" for every one of them (PEFT's spelling)."""

    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0

    def __post_init__(self):
        if isinstance(self.targets, str):
            object.__setattr__(self, "targets", (self.targets,))
        object.__setattr__(self, "targets", tuple(self.targets))
        if not self.targets:
            raise ValueError("LoRA needs at least one target projection")
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def targets_module(self, name: str) -> bool:
        return "all-linear" in self.targets or name in self.targets


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope: RopeConfig = RopeConfig()
    norm_eps: float = 1e-6
    tie_embeddings: bool = False
    qkv_bias: bool = False  # Qwen 2.5
    activation: str = "silu"  # "silu" (SwiGLU) or "gelu_tanh" (GeGLU)
    max_position_embeddings: int = 8192
    # Gemma 2
    embedding_scale: bool = False  # multiply embeddings by sqrt(hidden_size)
    norm_plus_one: bool = False  # RMSNorm weight applied as (1 + w)
    post_norms: bool = False  # norms after attention and after the MLP too
    query_pre_attn_scalar: float | None = None  # scale queries by its -1/2 power instead of head_dim's
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    sliding_window: int | None = None
    sliding_window_every: int = 0  # layer i slides when i % every == 0 (Gemma 2: 2); 0: every layer
    # DeepSeek-V2
    mla: MLAConfig | None = None
    moe: MoEConfig | None = None
    # Numerics and memory
    dtype: str = "float32"  # activations and matmuls
    param_dtype: str = "float32"  # master weights
    remat: str = "none"
    # Run each repeating run of layers as one lax.scan step (see decoder.layer_runs): the backward pass
    # then recomputes one block at a time, which XLA:CPU's scheduler does not manage over unrolled
    # layers. The parameter tree and checkpoints are the same either way.
    scan_layers: bool = False
    attention_impl: str = "auto"
    moe_impl: str = "dropless"
    # Adapters on the projections it targets (training with a frozen base); None: none.
    lora: LoraConfig | None = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                             f"({self.num_kv_heads})")
        if self.activation not in ("silu", "gelu_tanh"):
            raise ValueError(f"activation must be 'silu' or 'gelu_tanh', got {self.activation!r}")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat must be one of {REMAT_POLICIES}, got {self.remat!r}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {self.attention_impl!r}")
        if self.moe_impl not in MOE_IMPLS:
            raise ValueError(f"moe_impl must be one of {MOE_IMPLS}, got {self.moe_impl!r}")
        if self.rope.kind not in ("default", "llama3", "yarn"):
            raise ValueError(f"rope kind must be default, llama3 or yarn, got {self.rope.kind!r}")

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def layer_slides(self, layer: int) -> bool:
        """Whether `layer` uses the sliding window (Gemma 2 alternates)."""
        if self.sliding_window is None:
            return False
        return self.sliding_window_every == 0 or layer % self.sliding_window_every == 0

    def layer_is_moe(self, layer: int) -> bool:
        return self.moe is not None and layer >= self.moe.first_dense_layers

    @property
    def query_scale(self) -> float:
        if self.query_pre_attn_scalar is not None:
            return self.query_pre_attn_scalar ** -0.5
        if self.mla is not None:
            scale = (self.mla.qk_nope_head_dim + self.mla.qk_rope_head_dim) ** -0.5
            rope = self.rope
            if rope.kind != "default" and rope.mscale_all_dim and rope.factor > 1:
                # DeepSeek-V2 (and transformers) scale the softmax by YaRN's mscale(factor, mscale_all_dim) squared.
                scale *= (0.1 * rope.mscale_all_dim * math.log(rope.factor) + 1.0) ** 2
            return scale
        return self.head_dim ** -0.5


def from_hf_config(hf: dict[str, Any], **overrides) -> ModelConfig:
    """Our config from a Hugging Face config.json (as a dict)."""
    model_type = hf.get("model_type")
    family = {"llama": "llama", "qwen2": "qwen2", "gemma2": "gemma2", "deepseek_v2": "deepseek_v2"}.get(model_type)
    if family is None:
        raise ValueError(f"model_type {model_type!r} is not supported; supported: llama, qwen2, gemma2, "
                         "deepseek_v2")
    heads = hf["num_attention_heads"]
    fields: dict[str, Any] = dict(
        family=family, vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"], num_layers=hf["num_hidden_layers"], num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        rope=_rope(hf), norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_embeddings=bool(hf.get("tie_word_embeddings", family == "gemma2")),
        max_position_embeddings=hf.get("max_position_embeddings", 8192))
    if family == "qwen2":
        fields["qkv_bias"] = True
        if hf.get("use_sliding_window"):
            raise ValueError("Qwen2 with use_sliding_window is not supported (no released Qwen 2.5 uses it)")
    if family == "llama" and hf.get("attention_bias"):
        fields["qkv_bias"] = True
    if family == "gemma2":
        fields.update(activation="gelu_tanh", embedding_scale=True, norm_plus_one=True, post_norms=True,
                      query_pre_attn_scalar=hf.get("query_pre_attn_scalar", 256),
                      attn_logit_softcap=hf.get("attn_logit_softcapping"),
                      final_logit_softcap=hf.get("final_logit_softcapping"),
                      sliding_window=hf.get("sliding_window"), sliding_window_every=2)
        types = hf.get("layer_types")
        if types and any((t == "sliding_attention") != (i % 2 == 0) for i, t in enumerate(types)):
            raise ValueError("only Gemma 2's alternation (sliding on even layers) is supported")
    if family == "deepseek_v2":
        fields["mla"] = MLAConfig(q_lora_rank=hf.get("q_lora_rank"), kv_lora_rank=hf["kv_lora_rank"],
                                  qk_nope_head_dim=hf["qk_nope_head_dim"],
                                  qk_rope_head_dim=hf["qk_rope_head_dim"], v_head_dim=hf["v_head_dim"])
        if hf.get("n_routed_experts"):
            topk_method = hf.get("topk_method") or "greedy"
            if topk_method != "greedy":
                # DeepSeek-V2 (236B) first picks topk_group of n_group expert groups, then the
                # top-k inside them; routing every token greedily would run another model.
                raise ValueError(f"topk_method {topk_method!r} (n_group {hf.get('n_group')}, topk_group "
                                 f"{hf.get('topk_group')}) is not supported: only greedy top-k routing is "
                                 "(DeepSeek-V2-Lite and DeepSeek-Coder-V2-Lite); DeepSeek-V2's group-limited "
                                 "routing is not implemented")
            fields["moe"] = MoEConfig(
                num_experts=hf["n_routed_experts"], num_shared_experts=hf.get("n_shared_experts") or 0,
                experts_per_token=hf["num_experts_per_tok"],
                expert_intermediate_size=hf["moe_intermediate_size"],
                first_dense_layers=hf.get("first_k_dense_replace", 0),
                routed_scaling_factor=hf.get("routed_scaling_factor", 1.0),
                normalize_top_k=bool(hf.get("norm_topk_prob", False)))
        fields["head_dim"] = hf["qk_nope_head_dim"] + hf["qk_rope_head_dim"]
    fields.update(overrides)
    return ModelConfig(**fields)


def _rope(hf: dict[str, Any]) -> RopeConfig:
    params = dict(hf.get("rope_parameters") or {})
    scaling = dict(hf.get("rope_scaling") or {})
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    merged = {**scaling, **params}
    kind = merged.get("rope_type") or merged.get("type") or "default"
    if kind not in ("default", "llama3", "yarn"):
        raise ValueError(f"rope type {kind!r} is not supported (default, llama3, yarn)")
    known = {f.name for f in dataclasses.fields(RopeConfig)}
    extra = {k: v for k, v in merged.items() if k in known and k not in ("theta", "kind") and v is not None}
    return RopeConfig(theta=float(theta), kind=kind, **extra)


def to_hf_config(config: ModelConfig) -> dict[str, Any]:
    """A config.json transformers loads into the same architecture."""
    hf: dict[str, Any] = {
        "model_type": config.family, "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size, "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim, "rms_norm_eps": config.norm_eps,
        "tie_word_embeddings": config.tie_embeddings,
        "max_position_embeddings": config.max_position_embeddings, "torch_dtype": config.param_dtype,
        "architectures": [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                           "gemma2": "Gemma2ForCausalLM", "deepseek_v2": "DeepseekV2ForCausalLM"}[config.family]],
    }
    rope = config.rope
    hf["rope_theta"] = rope.theta
    if rope.kind == "llama3":
        hf["rope_scaling"] = {"rope_type": "llama3", "factor": rope.factor, "low_freq_factor": rope.low_freq_factor,
                              "high_freq_factor": rope.high_freq_factor,
                              "original_max_position_embeddings": rope.original_max_position_embeddings}
    elif rope.kind == "yarn":
        hf["rope_scaling"] = {"rope_type": "yarn", "factor": rope.factor, "beta_fast": rope.beta_fast,
                              "beta_slow": rope.beta_slow, "mscale": rope.mscale,
                              "mscale_all_dim": rope.mscale_all_dim,
                              "original_max_position_embeddings": rope.original_max_position_embeddings}
    if config.family == "llama":
        hf["attention_bias"] = config.qkv_bias
        hf["hidden_act"] = "silu"
    if config.family == "gemma2":
        hf.update(hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=config.query_pre_attn_scalar,
                  attn_logit_softcapping=config.attn_logit_softcap,
                  final_logit_softcapping=config.final_logit_softcap, sliding_window=config.sliding_window)
    if config.family == "deepseek_v2":
        mla, moe = config.mla, config.moe
        hf.update(q_lora_rank=mla.q_lora_rank, kv_lora_rank=mla.kv_lora_rank,
                  qk_nope_head_dim=mla.qk_nope_head_dim, qk_rope_head_dim=mla.qk_rope_head_dim,
                  v_head_dim=mla.v_head_dim)
        if moe is not None:
            hf.update(n_routed_experts=moe.num_experts, n_shared_experts=moe.num_shared_experts,
                      num_experts_per_tok=moe.experts_per_token, moe_intermediate_size=moe.expert_intermediate_size,
                      first_k_dense_replace=moe.first_dense_layers,
                      routed_scaling_factor=moe.routed_scaling_factor, norm_topk_prob=moe.normalize_top_k,
                      topk_method="greedy")
    return hf
