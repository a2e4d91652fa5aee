"""`convert gguf-to-hf` against transformers' own GGUF loading: the real SmolLM2
file (logits, tokenizer ids on the 800 CRUXEval programs, our jax forward), tiny
models written here in llama.cpp's layout (Llama with and without Llama 3.1's
rope scaling, Qwen 2), each quantisation's dequantisation, and the files it
refuses."""

import json

import numpy as np
import pytest

from codeio_jax.models import gguf as ours
from codeio_jax.models.gguf import GGUFError
from tests.conftest import shared_data
from tests.models.gguf_files import (add_tokenizer, finish, prompt_batch, smollm2_gguf, write_model_gguf,
                                     write_tensors_gguf)
from tests.models.hf_tiny import COMMON, hf_logits, max_diff_on_real_tokens, padded_batch, tiny_model
from tests.test_cli import cli

pytest.importorskip("torch")

@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """The real file and the folder the user's command makes of it."""
    path = smollm2_gguf()
    folder = tmp_path_factory.mktemp("smollm2") / "hf"
    done = cli("convert", "gguf-to-hf", "--in", path, "--out", folder, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "llama, 30 layers, 134,515,008 parameters (210 Q4_1, 61 F32, 1 Q8_0 tensors) as float32" in done.stdout
    return path, folder


@pytest.fixture(scope="module")
def reference(smollm2):
    """transformers' own loading of the same file (float32): model and tokenizer."""
    import torch
    import transformers as tr

    path, _ = smollm2
    model = tr.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return model, tr.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def test_smollm2_logits_match_transformers_gguf_loading(smollm2, reference):
    import torch
    import transformers as tr

    _, folder = smollm2
    model, tokenizer = reference
    converted = tr.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size",
                "max_position_embeddings", "tie_word_embeddings", "head_dim"):
        assert getattr(converted.config, key) == getattr(model.config, key), key
    assert converted.config.rope_parameters["rope_theta"] == model.config.rope_parameters["rope_theta"] == 100000
    tokens, mask = prompt_batch(tokenizer)
    diff = max_diff_on_real_tokens(hf_logits(converted, tokens, mask), hf_logits(model, tokens, mask), mask)
    assert diff < 1e-4


def test_smollm2_our_jax_forward_matches(smollm2, reference):
    from codeio_jax.models import convert

    _, folder = smollm2
    model, tokenizer = reference
    tokens, mask = prompt_batch(tokenizer)
    logits = np.asarray(convert.forward_fn(folder)(tokens))
    # The weights are the same (the test above: transformers on the folder gives the same
    # logits); this is our decoder's float32 arithmetic against torch's over 30 layers, on
    # logits up to about 40: 1.2e-4 to 1.3e-4 here, where against float64 torch's float32 is
    # 8.8e-5 off and ours 1.5e-4 (benchmarks/gguf_parity.py).
    assert max_diff_on_real_tokens(logits, hf_logits(model, tokens, mask), mask) < 2e-4


def test_smollm2_tokenizer_matches_on_the_cruxeval_programs(smollm2, reference):
    import transformers as tr
    from tokenizers import Tokenizer

    _, folder = smollm2
    _, expected = reference
    rows = [json.loads(line) for line in shared_data("cruxeval/cruxeval.jsonl").read_text().splitlines()]
    programs = [row["code"] for row in rows]
    assert len(programs) == 800
    want = expected(programs)["input_ids"]
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))  # as the sampler and `serve` read it
    assert [i for i, e in enumerate(tokenizer.encode_batch(programs)) if e.ids != want[i]] == []
    # transformers on the folder: the same ids, special tokens and chat template.
    loaded = tr.AutoTokenizer.from_pretrained(folder)
    assert loaded(programs)["input_ids"] == want
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token, loaded.unk_token) == \
        (expected.bos_token, expected.eos_token, expected.pad_token, expected.unk_token)
    chat = [{"role": "user", "content": "What is f(3)?"}]
    assert loaded.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) == \
        expected.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    # ...and the sampler's renderer of the folder's own template (ChatML, not Llama 3's headers).
    from codeio_jax.models.chat_template import FolderChatTemplate

    ours = FolderChatTemplate.from_folder(folder).render(chat, add_generation_prompt=True)
    assert ours == expected.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert ours.startswith("<|im_start|>system\n")
    assert loaded.decode(want[0]) == programs[0]


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2"])
def test_llama3_and_qwen2_splits_match_transformers(tmp_path, pre):
    """SmolLM2's vocabulary under Llama 3's and Qwen 2's splits (a file of the
    tokenizer alone), against transformers' GGUF tokenizer for the same file."""
    import gguf
    import transformers as tr
    from tokenizers import Tokenizer

    from codeio_jax.models import gguf_tokenizer

    meta = {name: field.contents() for name, field in ours.read_gguf(smollm2_gguf()).fields.items()}
    writer = gguf.GGUFWriter(str(tmp_path / "vocab.gguf"), "llama")
    tokens = meta["tokenizer.ggml.tokens"]
    add_tokenizer(writer, tokens=tokens, merges=meta["tokenizer.ggml.merges"],
                  token_types=meta["tokenizer.ggml.token_type"], pre=pre, add_bos_token=True)
    finish(writer)
    written = {name: field.contents() for name, field in ours.read_gguf(tmp_path / "vocab.gguf").fields.items()}
    tokenizer = Tokenizer.from_str(gguf_tokenizer.build_tokenizer(written, len(tokens)).to_str())
    expected = tr.AutoTokenizer.from_pretrained(tmp_path, gguf_file="vocab.gguf")
    programs = [json.loads(line)["code"] for line in shared_data("cruxeval/cruxeval.jsonl").read_text().splitlines()]
    want = expected(programs)["input_ids"]
    assert all(ids[0] == tokens.index("<|im_start|>") for ids in want)  # the BOS the file asks for
    assert [i for i, e in enumerate(tokenizer.encode_batch(programs)) if e.ids != want[i]] == []


def test_smollm2_digits_split_as_llama_cpp(smollm2):
    from tokenizers import Tokenizer

    # llama.cpp's smollm split isolates every digit before GPT-2's regex (as SmolLM2's own
    # tokenizer.json does), so the spaces before a digit stay one piece; GPT-2's regex alone
    # (transformers' GGUF tokenizer) would cut them into 'Ġ', 'Ġ1'.
    tokenizer = Tokenizer.from_file(str(smollm2[1] / "tokenizer.json"))
    assert tokenizer.encode("x =  1\n    2").tokens == ["x", "Ġ=", "ĠĠ", "1", "ĊĠĠĠĠ", "2"]


def test_truncated_file(tmp_path):
    data = smollm2_gguf().read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:50_000_000])
    with pytest.raises(GGUFError, match=rf"cut.gguf is truncated: it holds 50,000,000 bytes and its tensors end at "
                                        rf"byte {len(data):,}"):
        ours.open_gguf(cut)
    cut.write_bytes(data[:5000])
    with pytest.raises(GGUFError, match="cut.gguf is truncated or corrupt in its header"):
        ours.open_gguf(cut)
    done = cli("convert", "gguf-to-hf", "--in", cut, "--out", tmp_path / "out")
    assert done.returncode == 2 and "truncated" in done.stderr and not (tmp_path / "out").exists()


def random_model(config, seed: int = 0):
    """As hf_tiny's models: weights ~ N(0, 0.1), norms ~ N(1, 0.1)."""
    import torch
    import transformers as tr

    torch.manual_seed(seed)
    model = tr.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.normal_(1.0 if "norm" in name else 0.0, 0.1)
    return model


def llama_config(**changes):
    import transformers as tr

    return tr.LlamaConfig(**{**COMMON, "head_dim": 16, "rope_theta": 500000.0, "tie_word_embeddings": False,
                             **changes})


LLAMA31_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}


def rope_freqs(config) -> np.ndarray:
    """rope_freqs.weight as llama.cpp writes it: the default frequencies over the
    scaled ones, here from transformers' own rope functions."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    plain = config.rope_parameters["rope_theta"] ** -(np.arange(0, 16, 2) / 16)
    return (plain / scaled.double().numpy()).astype(np.float32)


def converted_logits(gguf_path, folder, tokens, mask, **write):
    import transformers as tr

    ours.write_hf(ours.open_gguf(gguf_path), folder, **write)
    return hf_logits(tr.AutoModelForCausalLM.from_pretrained(folder).eval(), tokens, mask)


@pytest.mark.parametrize("case", ["llama, Llama 3.1 rope", "llama, tied", "qwen2"])
def test_tiny_models_in_llama_cpp_layout(tmp_path, case):
    import torch
    import transformers as tr

    if case == "qwen2":
        model, freqs = tiny_model("qwen2", tmp_path / "hf"), None  # tied embeddings, q/k/v biases
    elif case == "llama, tied":
        model, freqs = random_model(llama_config(tie_word_embeddings=True)), None
    else:
        config = llama_config(rope_scaling=dict(LLAMA31_ROPE), max_position_embeddings=131072)
        model, freqs = random_model(config), rope_freqs(config)
    path = write_model_gguf(tmp_path / "tiny.gguf", model, case.split(",")[0], rope_freqs=freqs)
    tokens, mask = padded_batch()
    original = hf_logits(model, tokens, mask)
    assert max_diff_on_real_tokens(converted_logits(path, tmp_path / "out", tokens, mask), original, mask) < 1e-5
    if case == "qwen2":  # in shards of at most 40 kB, with their index
        sharded = converted_logits(path, tmp_path / "shards", tokens, mask, max_shard_bytes=40_000)
        assert max_diff_on_real_tokens(sharded, original, mask) < 1e-5
        assert len(json.loads((tmp_path / "shards" / "model.safetensors.index.json").read_text())["weight_map"]) == 38
    if freqs is None:  # transformers' loader ignores rope_freqs; elsewhere it checks our writer's layout
        theirs = tr.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32).eval()
        assert max_diff_on_real_tokens(hf_logits(theirs, tokens, mask), original, mask) < 1e-5
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["tie_word_embeddings"] == model.config.tie_word_embeddings
    assert written.get("rope_scaling") == (LLAMA31_ROPE if freqs is not None else None)


def test_rope_freqs_that_are_not_llama_3(tmp_path):
    # Llama 3's formula with an original context of 32: no Llama 3.x release has it.
    config = llama_config(rope_scaling={**LLAMA31_ROPE, "original_max_position_embeddings": 32})
    path = write_model_gguf(tmp_path / "odd.gguf", random_model(config), "llama", rope_freqs=rope_freqs(config))
    with pytest.raises(GGUFError, match="rope_freqs.weight is not Llama 3's rope scaling with factor 8"):
        ours.open_gguf(path)


def test_cli_gguf_to_hf_then_hf_to_jax(tmp_path):
    import jax.numpy as jnp
    from safetensors.numpy import load_file

    from codeio_jax.models import checkpoint
    from codeio_jax.models.decoder import Decoder

    model = tiny_model("qwen2", tmp_path / "hf")
    path = write_model_gguf(tmp_path / "qwen2.gguf", model, "qwen2")
    done = cli("convert", "gguf-to-hf", "--in", path, "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "qwen2, 3 layers" in done.stdout and "(38 F32 tensors) as float32" in done.stdout
    done = cli("convert", "hf-to-jax", "--in", tmp_path / "out", "--out", tmp_path / "ours", timeout=300)
    assert done.returncode == 0, done.stderr
    config, params = checkpoint.load(tmp_path / "ours")
    tokens, mask = padded_batch()
    logits = np.asarray(Decoder(config).apply({"params": params}, jnp.asarray(tokens))[0])
    assert max_diff_on_real_tokens(logits, hf_logits(model, tokens, mask), mask) < 1e-4
    again = cli("convert", "gguf-to-hf", "--in", path, "--out", tmp_path / "out")
    assert again.returncode == 2 and "holds a model already" in again.stderr
    bf16 = cli("convert", "gguf-to-hf", "--in", path, "--out", tmp_path / "bf16", "--dtype", "bfloat16")
    assert bf16.returncode == 0 and "as bfloat16" in bf16.stdout, bf16.stderr
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert {a.dtype.name for a in load_file(tmp_path / "bf16" / "model.safetensors").values()} == {"bfloat16"}
    wrong = cli("convert", "gguf-to-hf", "--in", path, "--out", tmp_path / "int8", "--dtype", "int8")
    assert wrong.returncode == 2 and "dtype 'int8' is not one of float32, float16, bfloat16" in wrong.stderr


def test_unknown_architecture(tmp_path):
    path = write_tensors_gguf(tmp_path / "mamba.gguf", "mamba",
                              {"token_embd.weight": (np.zeros((8, 4), np.float32), None)})
    with pytest.raises(GGUFError, match=r"mamba.gguf: general.architecture is 'mamba'; this converter handles "
                                        r"llama, qwen2 \(llama-style decoders\)"):
        ours.open_gguf(path)
    done = cli("convert", "gguf-to-hf", "--in", path, "--out", tmp_path / "out")
    assert done.returncode == 2 and "general.architecture is 'mamba'" in done.stderr


def test_unsupported_quantisation(tmp_path):
    import gguf

    # TQ2_0 (ternary weights, 66 bytes per 256): real, and not one we dequantise.
    raw = np.zeros((4, 66), np.uint8)
    path = write_tensors_gguf(tmp_path / "ternary.gguf", "llama",
                              {"blk.0.ffn_up.weight": (raw, gguf.GGMLQuantizationType.TQ2_0)})
    with pytest.raises(GGUFError, match="tensor blk.0.ffn_up.weight is of type TQ2_0, which this converter does not "
                                        "dequantise"):
        ours.open_gguf(path)
    with pytest.raises(GGUFError, match="TQ2_0"):
        ours.dequantised(ours.read_gguf(path).tensors[0])


def test_not_a_gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(GGUFError, match=r"model.gguf is not a GGUF file: it starts with b'PK\\x03\\x04'"):
        ours.open_gguf(path)


# Each quantisation on a 4 x 256 tensor. Where gguf can quantise, values on the format's own
# grid (power-of-two steps, every block reaching its extremes) go through gguf's quantize and
# must come back exactly; the K-quants (gguf has no quantiser for them) are packed here from
# chosen scales and codes, laid out as ggml's block_q4_K / q5_K / q6_K, against the values
# those imply.
SHAPE = (4, 256)


def _steps(rng, blocks: int) -> np.ndarray:
    return (2.0 ** -rng.integers(2, 8, blocks)).astype(np.float32)[:, None]


def _grid(rng, qtype: str) -> np.ndarray:
    blocks = SHAPE[0] * SHAPE[1] // 32
    step = _steps(rng, blocks)
    if qtype == "Q8_0":
        q = rng.integers(-127, 128, (blocks, 32))
        q[:, 0] = 127
        return (q * step).reshape(SHAPE).astype(np.float32)
    if qtype in ("Q4_0", "Q5_0"):  # the block's largest magnitude is the most negative code
        low = -8 if qtype == "Q4_0" else -16
        q = rng.integers(low + 1, -low, (blocks, 32))
        q[:, 3] = low
        return (q * step).reshape(SHAPE).astype(np.float32)
    top = 15 if qtype == "Q4_1" else 31  # Q4_1, Q5_1: min + step * code
    q = rng.integers(0, top + 1, (blocks, 32))
    q[:, 0], q[:, 1] = 0, top
    return (rng.integers(-20, 0, (blocks, 1)) * step + q * step).reshape(SHAPE).astype(np.float32)


def _f16(value: float) -> np.ndarray:
    return np.array([value], np.float16).view(np.uint8)


def _k_scales(scales: np.ndarray, mins: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins in 12 bytes: the low 6 bits of the first four
    in bytes 0-3 and 4-7, the last four split over bytes 8-11 (low nibbles) and
    the top bits of bytes 0-7."""
    out = np.zeros(12, np.uint8)
    for j in range(4):
        out[j] = scales[j] | ((scales[j + 4] >> 4) << 6)
        out[j + 4] = mins[j] | ((mins[j + 4] >> 4) << 6)
        out[j + 8] = (scales[j + 4] & 0xF) | ((mins[j + 4] & 0xF) << 4)
    return out


def _low_nibbles(q: np.ndarray) -> np.ndarray:
    """256 codes' low 4 bits: per 64, 32 bytes with the first 32 codes low, the next 32 high."""
    q = (q & 0xF).reshape(4, 2, 32)
    return (q[:, 0] | (q[:, 1] << 4)).reshape(-1).astype(np.uint8)


def _k_block(rng, qtype: str) -> tuple[np.ndarray, np.ndarray]:
    d, dmin = 2.0 ** -int(rng.integers(4, 10)), 2.0 ** -int(rng.integers(4, 10))
    if qtype == "Q6_K":
        scales, q = rng.integers(-64, 64, 16), rng.integers(0, 64, 256)
        ql, qh = np.zeros(128, np.uint8), np.zeros(64, np.uint8)
        for half in range(2):
            c = q[128 * half:128 * half + 128]
            ql[64 * half:64 * half + 32] = (c[0:32] & 0xF) | ((c[64:96] & 0xF) << 4)
            ql[64 * half + 32:64 * half + 64] = (c[32:64] & 0xF) | ((c[96:128] & 0xF) << 4)
            qh[32 * half:32 * half + 32] = ((c[0:32] >> 4) | ((c[32:64] >> 4) << 2) | ((c[64:96] >> 4) << 4)
                                            | ((c[96:128] >> 4) << 6))
        raw = np.concatenate([ql, qh, scales.astype(np.int8).view(np.uint8), _f16(d)])
        return raw, d * np.repeat(scales, 16) * (q - 32)
    scales, mins = rng.integers(0, 64, 8), rng.integers(0, 64, 8)
    q = rng.integers(0, 16 if qtype == "Q4_K" else 32, 256)
    parts = [_f16(d), _f16(dmin), _k_scales(scales, mins)]
    if qtype == "Q5_K":  # bit k of byte l: the fifth bit of code l of the k-th 32
        parts.append(sum(((q.reshape(8, 32)[k] >> 4) << k) for k in range(8)).astype(np.uint8))
    parts.append(_low_nibbles(q))
    return np.concatenate(parts), d * np.repeat(scales, 32) * q - dmin * np.repeat(mins, 32)


def quantised_tensors(rng) -> dict[str, tuple[np.ndarray, np.ndarray, object]]:
    """name -> (what goes into the file, the float32 values it holds, ggml type)."""
    import gguf

    types = gguf.GGMLQuantizationType
    tensors = {}
    x = rng.standard_normal(SHAPE).astype(np.float32)
    tensors["F32"] = (x, x, None)
    half = rng.standard_normal(SHAPE).astype(np.float16)
    tensors["F16"] = (half, half.astype(np.float32), None)
    bf16 = (x.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)  # exactly representable
    tensors["BF16"] = (gguf.quantize(bf16, types.BF16), bf16, types.BF16)
    for name in ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"):
        values = _grid(rng, name)
        tensors[name] = (gguf.quantize(values, types[name]), values, types[name])
    for name in ("Q4_K", "Q5_K", "Q6_K"):
        rows = [_k_block(rng, name) for _ in range(SHAPE[0])]
        tensors[name] = (np.stack([r for r, _ in rows]), np.stack([v for _, v in rows]).astype(np.float32),
                         types[name])
    return tensors


def test_dequantisation_of_each_type(tmp_path):
    tensors = quantised_tensors(np.random.default_rng(0))
    assert sorted(tensors) == sorted(ours.QUANT_TYPES)
    path = write_tensors_gguf(tmp_path / "quants.gguf", "llama",
                              {f"t.{name}": (data, kind) for name, (data, _, kind) in tensors.items()})
    read = {t.name[2:]: t for t in ours.read_gguf(path).tensors}
    for name, (_, values, _) in tensors.items():
        assert read[name].tensor_type.name == name
        np.testing.assert_array_equal(ours.dequantised(read[name]), values, err_msg=name)
