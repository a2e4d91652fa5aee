"""Logit parity with Hugging Face transformers, family by family.

For each family a tiny transformers model with random weights (N(0, 0.1), so
logits are peaked and small errors show) is saved, imported with
`convert.load_hf`, and run on the same batch with right padding; the figure is
the max abs difference of float32 logits over the real tokens (target: 1e-4).
Also: the exported checkpoint reloaded by transformers, against the original.

Run: .venv/bin/python benchmarks/model_parity.py
"""

import sys
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeio_jax.models import convert  # noqa: E402
from codeio_jax.models.decoder import Decoder  # noqa: E402
from tests.models.hf_tiny import hf_logits, max_diff_on_real_tokens, padded_batch, tiny_model  # noqa: E402

FAMILIES = ["llama", "qwen2", "gemma2"]  # and DeepSeek-V2 below, from its test's tiny models


def deepseek_model(folder, case):
    """DeepSeek-V2's tiny models of its own test: V2-Lite's shape, and one with the query bottleneck."""
    from tests.models.test_deepseek import tiny_deepseek

    return tiny_deepseek(case, folder)


def main():
    import transformers

    transformers.utils.logging.disable_progress_bar()
    tmp = Path(tempfile.mkdtemp(prefix="bench-parity-"))
    print(f"{'family':<20}{'max |ours - transformers|':>27}{'exported, reloaded':>21}")
    worst = 0.0
    for family in FAMILIES + ["deepseek_v2 lite", "deepseek_v2 q_lora"]:
        folder = tmp / family.replace(" ", "_")
        if family.startswith("deepseek_v2"):
            model = deepseek_model(folder, family.split()[1])
        else:
            model = tiny_model(family, folder)
        import transformers as tr

        tokens, mask = padded_batch(vocab=model.config.vocab_size)
        reference = hf_logits(model, tokens, mask)
        config, params = convert.load_hf(folder)
        ours = np.asarray(Decoder(config).apply({"params": params}, jnp.asarray(tokens))[0])
        diff = max_diff_on_real_tokens(ours, reference, mask)
        convert.save_hf(folder.with_name(folder.name + "_out"), config, params)
        reloaded = tr.AutoModelForCausalLM.from_pretrained(folder.with_name(folder.name + "_out"),
                                                           attn_implementation="eager").eval()
        exported = max_diff_on_real_tokens(hf_logits(reloaded, tokens, mask), reference, mask)
        worst = max(worst, diff)
        print(f"{family:<20}{diff:>27.2e}{exported:>21.2e}")
    print(f"\nworst: {worst:.2e} (target 1e-4)")


if __name__ == "__main__":
    main()
