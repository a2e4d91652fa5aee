"""Generation with the KV cache: a batched sampler, a local teacher and an OpenAI-compatible server."""

from codeio_jax.sampling.sampler import Completion, Sampler, SamplingError, SamplingParams

__all__ = ["Completion", "Sampler", "SamplingError", "SamplingParams"]
