"""The sampler against transformers' own `generate`, family by family, and its
sampling, stopping and compile-reuse behaviour."""

import numpy as np
import pytest

from codeio_jax.models import convert
from codeio_jax.sampling import Sampler, SamplingError, SamplingParams
from tests.models.hf_tiny import MODEL_CLASSES, hf_config, tiny_model

torch = pytest.importorskip("torch")
FAMILIES = ("llama", "qwen2", "gemma2")
# Different lengths in one batch: 6 rows pad to a batch of 8; 37 tokens pass the
# first prefill bucket, and every row outruns Gemma 2's sliding window of 4.
LENGTHS = (3, 11, 7, 20, 1, 37)


def varied_model(family, folder):
    """hf_tiny's model, changed where its greedy output would only repeat one or two
    tokens (a weak test): Qwen2 unties its embeddings (as Qwen2.5-7B does), and
    Gemma 2's embeddings are smaller (x sqrt(hidden), they drown the layers)."""
    import transformers as tr

    config = hf_config(family)
    if family == "qwen2":
        config.tie_word_embeddings = False
    torch.manual_seed(0)
    model = getattr(tr, MODEL_CLASSES[family])(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.normal_(0, 0.03 if family == "gemma2" and "embed" in name else 0.1)
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    model = varied_model(request.param, folder)
    config, params = convert.load_hf(folder)
    return request.param, model, Sampler(config, params)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    model = tiny_model("llama", folder, seed=1)
    config, params = convert.load_hf(folder)
    return model, config, params, Sampler(config, params)


def prompts(lengths=LENGTHS, seed=0):
    rng = np.random.RandomState(seed)
    return [rng.randint(0, 128, n).tolist() for n in lengths]


def hf_greedy(model, prompt, new_tokens=32):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             do_sample=False, max_new_tokens=new_tokens)
    return out[0, len(prompt):].tolist()


def test_greedy_batch_equals_transformers_generate_per_prompt(family_model):
    family, model, sampler = family_model
    eos = model.generation_config.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    batch = prompts()
    ours = sampler.generate(batch, 32, stop_token_ids=eos)
    for prompt, completion in zip(batch, ours):
        reference = hf_greedy(model, prompt)  # one prompt at a time: no padding on the reference side
        # transformers keeps the EOS it stopped at; we leave it out and name it in `stop`.
        got = completion.tokens + ([completion.stop] if completion.finish_reason == "stop" else [])
        assert got == reference, f"{family}, prompt of {len(prompt)}"
        assert completion.prompt_tokens == len(prompt) and completion.completion_tokens == len(reference)
    assert np.mean([len(set(c.tokens)) for c in ours]) > 5  # the outputs are not one token repeated


def test_chunked_prefill_gives_the_same_tokens(llama):
    _, config, params, sampler = llama
    batch = prompts((40, 5, 33))
    chunked = Sampler(config, params, prefill_chunk=16)
    assert [c.tokens for c in chunked.generate(batch, 16)] == [c.tokens for c in sampler.generate(batch, 16)]


def test_calls_in_one_bucket_reuse_the_compiled_program(llama):
    _, config, params, _ = llama
    sampler = Sampler(config, params)
    sampler.generate(prompts((5, 9, 3)), 20)  # batch 4, prefill 16, cache 32
    sampler.generate(prompts((12, 2, 16, 7), seed=1), 14)  # the same buckets
    sampler.generate(prompts((1,), seed=2), 5, stop_token_ids=[3])  # batch 1: a second program
    assert sampler.compiled_programs() == 2


def test_sampling_is_deterministic_per_seed_and_top_k_1_is_greedy(llama):
    _, _, _, sampler = llama
    batch = prompts((6, 13, 4))
    greedy = [c.tokens for c in sampler.generate(batch, 24)]
    first = [c.tokens for c in sampler.generate(batch, 24, temperature=1.0, seed=7)]
    again = [c.tokens for c in sampler.generate(batch, 24, temperature=1.0, seed=7)]
    other = [c.tokens for c in sampler.generate(batch, 24, temperature=1.0, seed=8)]
    assert first == again and first != other and first != greedy
    assert [c.tokens for c in sampler.generate(batch, 24, temperature=1.5, top_k=1, seed=3)] == greedy
    assert [c.tokens for c in sampler.generate(batch, 24, temperature=1.0, top_p=1e-6, seed=3)] == greedy
    # A row's sample depends on its own settings, not on the rows batched with it.
    alone = sampler.generate_rows([batch[1]], [SamplingParams(24, temperature=1.0, seed=8)])[0]
    batched = sampler.generate_rows(batch, [SamplingParams(24, temperature=1.0, seed=s) for s in (1, 8, 2)])[1]
    assert alone.tokens == batched.tokens


def test_rows_that_share_a_prompt_sample_as_they_would_alone(llama):
    # A GRPO group: copies of one prompt, prefilled once, each row from its own
    # copy of that cache, among rows of another prompt and their own budgets.
    _, _, _, sampler = llama
    a, b = prompts((9, 30))
    rows = [a, b, a, a, b]
    settings = [SamplingParams(n, temperature=1.0, seed=s) for n, s in ((12, 3), (12, 4), (20, 5), (12, 6), (5, 7))]
    together = sampler.generate_rows(rows, settings)
    alone = [sampler.generate_rows([p], [s])[0] for p, s in zip(rows, settings)]
    assert [c.tokens for c in together] == [c.tokens for c in alone]
    assert [c.prompt_tokens for c in together] == [9, 30, 9, 9, 30]
    assert len({tuple(together[i].tokens[:12]) for i in (0, 2, 3)}) == 3  # the copies sample apart
    greedy = sampler.generate_rows([a, a, b], [SamplingParams(16)] * 3)
    assert greedy[0].tokens == greedy[1].tokens == sampler.generate([a], 16)[0].tokens
    assert greedy[2].tokens == sampler.generate([b], 16)[0].tokens


def test_stop_tokens_and_sequences_end_rows_early(llama):
    _, _, _, sampler = llama
    batch = prompts((6, 13, 4))
    full = [c.tokens for c in sampler.generate(batch, 24)]
    token = full[0][5]
    cut = full[0].index(token)
    sequence = tuple(full[1][7:9])
    at = next(i for i in range(len(full[1])) if tuple(full[1][i:i + 2]) == sequence)
    rows = sampler.generate_rows(batch, [SamplingParams(24, stop_token_ids=(token,)),
                                         SamplingParams(24, stop_sequences=((999,), sequence)),
                                         SamplingParams(24)])
    assert (rows[0].tokens, rows[0].finish_reason, rows[0].stop) == (full[0][:cut], "stop", token)
    assert rows[0].completion_tokens == cut + 1
    assert (rows[1].tokens, rows[1].finish_reason, rows[1].stop) == (full[1][:at], "stop", sequence)
    assert rows[1].completion_tokens == at + 2
    assert (rows[2].tokens, rows[2].finish_reason, rows[2].stop) == (full[2], "length", None)


def test_rows_have_their_own_budgets(llama):
    _, _, _, sampler = llama
    batch = prompts((6, 13))
    full = [c.tokens for c in sampler.generate(batch, 24)]
    rows = sampler.generate_rows(batch, [SamplingParams(3), SamplingParams(24)])
    assert [r.tokens for r in rows] == [full[0][:3], full[1]]
    assert [r.finish_reason for r in rows] == ["length", "length"]


def test_bad_requests_are_refused_with_the_reason(llama):
    _, _, _, sampler = llama
    with pytest.raises(SamplingError, match="prompt 1 is empty"):
        sampler.generate([[1], []], 4)
    with pytest.raises(SamplingError, match="exceed the maximum length 256"):
        sampler.generate([[1] * 250], 8)
    with pytest.raises(SamplingError, match=r"token ids must lie in \[0, 128\)"):
        sampler.generate([[1, 128]], 4)
    with pytest.raises(SamplingError, match="top_p"):
        sampler.generate([[1]], 4, temperature=1.0, top_p=0.0)
    assert sampler.generate([], 4) == []


def test_long_generations_grow_the_cache_in_phases_and_still_match(llama):
    model, _, _, sampler = llama
    batch = prompts((2, 41))  # prefill 48; 41 + 200 -> a cache of 256 read as 128, then 256 slots
    ours = sampler.generate(batch, 200)
    for prompt, completion in zip(batch, ours):
        assert completion.tokens == hf_greedy(model, prompt, 200)
