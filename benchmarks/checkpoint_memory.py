"""Peak memory while importing a Hugging Face checkpoint, against its size.

A random Llama-shaped checkpoint of about 1.3 GB (float32 safetensors, two
shards with the index) is written once. Each importer then runs in a fresh
process; the figure is the growth of its peak resident memory (VmHWM) over its
resident memory just before the import (the interpreter, JAX or torch already
loaded). Ours: `convert.load_hf` (parameters end as JAX arrays). Baseline in the
same run: transformers' `from_pretrained` of the same folder. Target: ours at
most 1.3 x the checkpoint's size.

Run: .venv/bin/python benchmarks/checkpoint_memory.py
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MAKE = """
import torch, transformers as tr
config = tr.LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=4096, num_hidden_layers=16,
                        num_attention_heads=16, num_key_value_heads=4, tie_word_embeddings=False)
torch.manual_seed(0)
tr.LlamaForCausalLM(config).save_pretrained({folder!r}, max_shard_size="700MB")
"""

MEASURE = """
import json, sys
sys.path.insert(0, {root!r})

def rss_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])

which = {which!r}
if which == "ours":
    import jax, jax.numpy as jnp
    jnp.zeros(1).block_until_ready()  # the backend is up before the baseline is taken
    from codeio_jax.models import convert
    before = rss_kib("VmRSS")
    config, params = convert.load_hf({folder!r})
    jax.block_until_ready(params)
    count = sum(x.size for x in jax.tree_util.tree_leaves(params))
else:
    import torch, transformers as tr
    before = rss_kib("VmRSS")
    model = tr.AutoModelForCausalLM.from_pretrained({folder!r}, torch_dtype=torch.float32)
    count = sum(p.numel() for p in model.parameters())
print(json.dumps({{"before_kib": before, "peak_kib": rss_kib("VmHWM"), "parameters": count}}))
"""


def measure(which, folder):
    out = subprocess.run([sys.executable, "-c", MEASURE.format(root=str(ROOT), which=which, folder=str(folder))],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    folder = Path(tempfile.mkdtemp(prefix="bench-ckpt-")) / "llama"
    subprocess.run([sys.executable, "-c", MAKE.format(folder=str(folder))], check=True, capture_output=True)
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    shards = len(list(folder.glob("*.safetensors")))
    print(f"checkpoint: {size / 2**30:.2f} GiB in {shards} safetensors shards\n")
    print(f"{'importer':<32}{'parameters':>14}{'peak growth GiB':>17}{'x checkpoint':>14}")
    for which, label in (("ours", "codeio-jax convert.load_hf"), ("transformers", "transformers from_pretrained")):
        found = measure(which, folder)
        growth = (found["peak_kib"] - found["before_kib"]) * 1024
        print(f"{label:<32}{found['parameters']:>14,}{growth / 2**30:>17.2f}{growth / size:>13.2f}x")


if __name__ == "__main__":
    main()
