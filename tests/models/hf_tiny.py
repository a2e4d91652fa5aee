"""Tiny transformers models with random weights, saved as Hugging Face folders:
the reference every parity test and benchmark compares our decoder with."""

from pathlib import Path

import numpy as np

COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256)


def hf_config(family: str):
    import transformers as tr

    if family == "llama":
        return tr.LlamaConfig(**COMMON, head_dim=16, rope_theta=500000.0, tie_word_embeddings=False,
                              rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0, "original_max_position_embeddings": 32})
    if family == "qwen2":
        return tr.Qwen2Config(**COMMON, tie_word_embeddings=True, rope_theta=1000000.0)
    if family == "gemma2":
        # A window of 4 on 12-token batches: the sliding layers really slide.
        return tr.Gemma2Config(**COMMON, head_dim=16, sliding_window=4, query_pre_attn_scalar=16,
                               attn_logit_softcapping=50.0, final_logit_softcapping=30.0)
    raise ValueError(family)


MODEL_CLASSES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "gemma2": "Gemma2ForCausalLM"}


def tiny_model(family: str, folder: Path, seed: int = 0, max_shard_size: str | None = None):
    """A random model (weights ~ N(0, 0.1), norms ~ N(1, 0.1): peaked logits, so small errors show),
    saved to `folder`; returns the torch model."""
    import torch
    import transformers as tr

    torch.manual_seed(seed)
    model = getattr(tr, MODEL_CLASSES[family])(hf_config(family)).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            # Norm weights near 1 (Gemma stores 1 + w, so near 0 there): near-zero norms
            # would flatten every logit and hide a wrong attention scale.
            centre = 1.0 if "norm" in name and family != "gemma2" else 0.0
            parameter.normal_(centre, 0.1)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    return model


def padded_batch(seed: int = 0, vocab: int = 128):
    """Three rows of 12 tokens, two of them right-padded (mask 0)."""
    tokens = np.random.RandomState(seed).randint(0, vocab, (3, 12))
    mask = np.ones_like(tokens)
    mask[1, 9:] = 0
    mask[2, 5:] = 0
    return tokens, mask


def hf_logits(model, tokens, mask):
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.float().numpy()


def max_diff_on_real_tokens(ours, reference, mask) -> float:
    return max(float(np.abs(ours[b, :n] - reference[b, :n]).max()) for b, n in enumerate(mask.sum(1)))
