"""Moving a Hugging Face model between the forms an experiment needs: our
checkpoint (what `train.init_from` reads) and, after training, an HF folder
again (what the local teacher and the CRUXEval evaluation load)."""

from __future__ import annotations

import shutil
from pathlib import Path

# What a folder needs besides weights to be sampled in its own chat template.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def checkpoint_of(hf: Path, ckpt: Path) -> Path:
    """Our checkpoint of an HF folder, made once, then reused."""
    from codeio_jax.models import checkpoint, convert

    if not (ckpt / checkpoint.CONFIG_FILE).exists():
        shutil.rmtree(ckpt, ignore_errors=True)
        config, params = convert.load_hf(hf)
        checkpoint.save(ckpt, config, params)
    return ckpt


def merged_hf_folder(run_dir: Path, base_hf: Path, out: Path) -> Path:
    """A training run as an HF folder (a LoRA run's adapters merged in), with the base's tokenizer files."""
    from codeio_jax.models import checkpoint, convert

    shutil.rmtree(out, ignore_errors=True)
    config, params = checkpoint.load(run_dir)
    convert.save_hf(out, config, params)
    for name in TOKENIZER_FILES:
        if (base_hf / name).exists():
            shutil.copy(base_hf / name, out / name)
    return out
