"""tasks.vocabularies against the libraries it wraps, on tokenizers trained here.

A tiny byte-level BPE (the kind Qwen 2.5 and Llama 3 ship) with chat special
tokens and a Llama-3-style post-processor that adds a BOS, so "encode adds no
special tokens" means something; a tiny SentencePiece model for the T5 path.
"""

import copy
import inspect
import json
import pickle
import shutil
import textwrap

import pytest

tf = pytest.importorskip("tensorflow")
seqio = pytest.importorskip("seqio")
tokenizers = pytest.importorskip("tokenizers")
sentencepiece = pytest.importorskip("sentencepiece")

from tasks.vocabularies import HFTokenizerVocabulary, VocabularyError, sentencepiece_vocabulary  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|begin_of_text|>", "<|im_start|>", "<|im_end|>"]
TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "print(f'héllo, wörld: {1 + 2}')  # ünïcödé, 日本語, emoji 🐍\n",
    "\n\n  \tindented\r\nlines\n",
    "<|im_start|>user\nWhat does `sorted([3, 1])` return?<|im_end|>\n<|im_start|>assistant\n",
    "",
]


def corpus() -> list[str]:
    """Python source (textwrap's own code) and a few chats: what the merges learn from."""
    source = inspect.getsource(textwrap)
    return [source[i:i + 400] for i in range(0, len(source), 400)] + TEXTS * 5


def train_bpe(folder, config: dict | None):
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=256 + len(SPECIALS) + 300, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus(), trainer)
    bos = tokenizer.token_to_id("<|begin_of_text|>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder / "tokenizer.json"


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    """(path of tokenizer.json, the tokenizers.Tokenizer) with a config naming eos and pad."""
    config = {"eos_token": "<|im_end|>", "pad_token": {"content": "<|endoftext|>", "special": True},
              "bos_token": "<|begin_of_text|>", "unk_token": None}
    path = train_bpe(tmp_path_factory.mktemp("bpe"), config)
    return path, tokenizers.Tokenizer.from_file(str(path))


@pytest.fixture(scope="module")
def vocab(bpe):
    return HFTokenizerVocabulary(str(bpe[0]))


def test_encode_matches_tokenizers_and_transformers(bpe, vocab):
    from transformers import PreTrainedTokenizerFast

    path, tokenizer = bpe
    fast = PreTrainedTokenizerFast(tokenizer_file=str(path))
    assert tokenizer.encode("x").ids[0] == vocab.bos_id  # the file's default would add a BOS
    for text in TEXTS:
        ids = list(vocab.encode(text))
        assert ids == tokenizer.encode(text, add_special_tokens=False).ids
        assert ids == fast.encode(text, add_special_tokens=False)
    assert len(vocab.encode(TEXTS[0])) < len(TEXTS[0].encode())  # the merges are in use


def test_decode_round_trips(bpe, vocab):
    # Text without the EOS comes back whole, special tokens included; seqio's
    # decode ends at the first EOS, here the chat's first "<|im_end|>".
    ends_at_text_end = HFTokenizerVocabulary(str(bpe[0]), eos_token="<|endoftext|>")
    for text in TEXTS:
        assert ends_at_text_end.decode(ends_at_text_end.encode(text)) == text
        assert vocab.decode(vocab.encode(text)) == text.split("<|im_end|>")[0]


def test_special_tokens_in_text_are_single_ids(bpe, vocab):
    _, tokenizer = bpe
    ids = vocab.encode("<|im_start|>user\nhi<|im_end|>\n<|endoftext|>")
    start, end, text_end = (tokenizer.token_to_id(t) for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"))
    assert ids[0] == start and ids.count(start) == 1
    assert ids.count(end) == 1 and ids[-1] == text_end


def test_special_ids_and_size(bpe, vocab):
    _, tokenizer = bpe
    assert vocab.eos_id == tokenizer.token_to_id("<|im_end|>")
    assert vocab.pad_id == tokenizer.token_to_id("<|endoftext|>")
    assert vocab.bos_id == tokenizer.token_to_id("<|begin_of_text|>")
    assert vocab.unk_id is None
    assert vocab.vocab_size == tokenizer.get_vocab_size(with_added_tokens=True) == 256 + len(SPECIALS) + 300
    assert vocab.extra_ids == 0


def test_decode_stops_before_the_first_eos(vocab):
    ids = vocab.encode("kept") + [vocab.eos_id] + vocab.encode("dropped") + [vocab.pad_id] * 3
    assert vocab.decode(ids) == "kept"
    assert vocab.decode_tf(tf.constant(ids)).numpy().decode() == "kept"


def test_tf_equals_python_eagerly(vocab):
    for text in TEXTS:
        ids = vocab.encode_tf(tf.constant(text))
        assert ids.dtype == tf.int32 and ids.shape.rank == 1
        assert ids.numpy().tolist() == vocab.encode(text)
        if text:  # seqio answers an empty tensor itself
            assert vocab.decode_tf(ids).numpy().decode("utf-8") == vocab.decode(ids.numpy().tolist())


def test_tf_in_a_dataset_map(vocab):
    """Graph mode: the functions are traced once, shapes and dtypes static enough for seqio."""
    dataset = tf.data.Dataset.from_tensor_slices(TEXTS).map(vocab.encode_tf)
    assert dataset.element_spec == tf.TensorSpec([None], tf.int32)
    assert [ids.tolist() for ids in dataset.as_numpy_iterator()] == [vocab.encode(t) for t in TEXTS]
    texts = dataset.map(vocab.decode_tf)
    assert texts.element_spec == tf.TensorSpec([], tf.string)
    assert [t.decode("utf-8") for t in texts.as_numpy_iterator()] == [vocab.decode(vocab.encode(t)) for t in TEXTS]


def test_tf_batches(vocab):
    ragged = vocab.encode_tf(tf.constant(TEXTS[:3]))
    assert isinstance(ragged, tf.RaggedTensor) and ragged.shape.as_list() == [3, None]
    assert ragged.to_list() == [vocab.encode(t) for t in TEXTS[:3]]
    assert vocab.decode_tf(ragged).numpy().tolist() == [t.encode() for t in TEXTS[:3]]

    nested = vocab.encode_tf(tf.constant([TEXTS[:2], TEXTS[2:4]]))
    assert nested.shape.as_list() == [2, 2, None]
    assert nested.to_list() == [[vocab.encode(t) for t in TEXTS[:2]], [vocab.encode(t) for t in TEXTS[2:4]]]

    # Dense and padded after the EOS (seqio's padded batches): the padding does not decode.
    rows = [vocab.encode(t) + [vocab.eos_id] for t in TEXTS[:3]]
    width = max(map(len, rows))
    dense = tf.constant([row + [vocab.pad_id] * (width - len(row)) for row in rows])
    assert vocab.decode_tf(dense).numpy().tolist() == [t.encode() for t in TEXTS[:3]]
    assert [vocab.decode(row) for row in dense.numpy().tolist()] == TEXTS[:3]

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def decode_graph(ids):
        return vocab.decode_tf(ids)

    assert decode_graph(dense).numpy().tolist() == [t.encode() for t in TEXTS[:3]]


def test_pickle_and_deepcopy_reload_by_path(vocab):
    for clone in (pickle.loads(pickle.dumps(vocab)), copy.deepcopy(vocab)):
        assert clone._tokenizer is None  # read again on first use, not shipped
        assert clone == vocab and clone.eos_id == vocab.eos_id
        assert clone.encode(TEXTS[1]) == vocab.encode(TEXTS[1])
        assert clone.decode_tf(clone.encode_tf(tf.constant(TEXTS[1]))).numpy().decode() == TEXTS[1]


def test_a_changed_file_is_caught_after_unpickling(bpe, tmp_path):
    shutil.copytree(bpe[0].parent, tmp_path / "copy")
    pickled = pickle.dumps(HFTokenizerVocabulary(str(tmp_path / "copy")))
    path = tmp_path / "copy" / "tokenizer.json"
    path.write_text(path.read_text().replace('"<|im_start|>"', '"<|im_begin|>"'))
    with pytest.raises(VocabularyError, match="changed since"):
        pickle.loads(pickled).encode("x")


def test_equality_is_by_content_and_special_ids(bpe, vocab, tmp_path):
    shutil.copytree(bpe[0].parent, tmp_path / "copy")
    moved = HFTokenizerVocabulary(str(tmp_path / "copy" / "tokenizer.json"))
    assert moved == vocab and hash(moved) == hash(vocab)
    assert HFTokenizerVocabulary(str(bpe[0]), eos_token="<|endoftext|>") != vocab
    assert vocab != seqio.ByteVocabulary()
    other = train_bpe(tmp_path / "other", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    (tmp_path / "other" / "tokenizer.json").write_text(other.read_text().replace("<|begin_of_text|>", "<|bot|>"))
    assert HFTokenizerVocabulary(str(other)) != vocab


def test_without_a_config(bpe, tmp_path):
    shutil.copy(bpe[0], tmp_path / "tokenizer.json")
    with pytest.raises(VocabularyError, match="pass eos_token="):
        HFTokenizerVocabulary(str(tmp_path))
    bare = HFTokenizerVocabulary(str(tmp_path), eos_token="<|endoftext|>")
    assert bare.eos_id == bpe[1].token_to_id("<|endoftext|>")
    assert bare.pad_id == 0 and bare.bos_id is None  # no pad token named: seqio's 0
    assert HFTokenizerVocabulary(str(tmp_path), eos_token="<|im_end|>", pad_token="<|im_start|>").pad_id == 2


def test_clear_errors(bpe, tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "absent")):
        HFTokenizerVocabulary(str(tmp_path / "absent" / "tokenizer.json"))
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        HFTokenizerVocabulary(str(tmp_path))  # a folder without one
    with pytest.raises(VocabularyError, match=r"eos_token '<\|eot_id\|>' is not a token.*<\|im_end\|>"):
        HFTokenizerVocabulary(str(bpe[0]), eos_token="<|eot_id|>")
    with pytest.raises(VocabularyError, match="pad_token"):
        HFTokenizerVocabulary(str(bpe[0]), pad_token="<pad>")


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spm")
    (folder / "text.txt").write_text("\n".join(corpus() * 3))
    sentencepiece.SentencePieceTrainer.train(
        input=str(folder / "text.txt"), model_prefix=str(folder / "spm"), vocab_size=300,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, minloglevel=2)
    return folder / "spm.model"


def test_sentencepiece_round_trips_in_python_and_tf(spm_model):
    vocabulary = sentencepiece_vocabulary(str(spm_model))
    assert (vocabulary.pad_id, vocabulary.eos_id, vocabulary.vocab_size) == (0, 1, 300)
    text = "def add(a, b):\n    return a + b"
    ids = vocabulary.encode(text)
    assert vocabulary.decode(ids) == " ".join(text.split())  # SentencePiece normalizes whitespace
    assert vocabulary.encode_tf(tf.constant(text)).numpy().tolist() == ids
    dataset = tf.data.Dataset.from_tensor_slices([text]).map(vocabulary.encode_tf).map(vocabulary.decode_tf)
    assert next(dataset.as_numpy_iterator()).decode() == vocabulary.decode(ids)
    with pytest.raises(FileNotFoundError):
        sentencepiece_vocabulary(str(spm_model.parent / "absent.model"))


def test_a_seqio_task_tokenizes_with_the_vocabulary(vocab):
    name = "test_vocabularies_hf_task"

    def dataset_fn(split, shuffle_files, seed=None):
        return tf.data.Dataset.from_tensor_slices({"targets": TEXTS[:4]})

    seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(dataset_fn, splits=["train"]),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
        output_features={"targets": seqio.Feature(vocab, add_eos=True, dtype=tf.int32)})
    try:
        task = seqio.get_mixture_or_task(name)
        dataset = task.get_dataset(sequence_length={"targets": 64}, split="train", shuffle=False)
        got = [example["targets"].tolist() for example in dataset.as_numpy_iterator()]
    finally:
        seqio.TaskRegistry.remove(name)
    assert got == [vocab.encode(t) + [vocab.eos_id] for t in TEXTS[:4]]
    assert name not in seqio.TaskRegistry.names()
