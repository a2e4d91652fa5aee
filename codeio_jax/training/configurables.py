"""What gin files may name: everything the trainer, its inputs and its tasks
take, registered in one place so `codeio-jax train` can parse any recipe.

The SeqIO task registrations (tasks/) are registered only where SeqIO is
installed; the GPU machines train on synthetic data or prepared inputs without it.
"""

from __future__ import annotations

import gin

from codeio_jax.models import presets
from codeio_jax.models.config import LoraConfig

# `train.lora = @LoraConfig()` with LoraConfig.targets, .rank, .alpha, .dropout (models/config.py).
gin.external_configurable(LoraConfig)


@gin.configurable
def preset(name: str = gin.REQUIRED, vocab_size: int | None = None, max_position_embeddings: int | None = None):
    """A model from models/presets.py; vocab_size overrides it to match a tokenizer."""
    config = presets.preset(name)
    changes = {key: value for key, value in (("vocab_size", vocab_size),
                                             ("max_position_embeddings", max_position_embeddings)) if value}
    return config.replace(**changes)


def register_all() -> None:
    """Import every module whose functions and classes gin files name."""
    from codeio_jax.training import evaluation, input, optimizer, partitioning, trainer  # noqa: F401

    try:
        import seqio  # noqa: F401
    except ImportError:
        return
    from tasks import codeio, cruxeval, instruct, vocabularies  # noqa: F401
