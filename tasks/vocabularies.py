"""SeqIO vocabularies: a Hugging Face `tokenizer.json`, and SentencePiece models.

The paper's base models (Qwen 2.5 Coder, Llama 3.1, Gemma 2, DeepSeek Coder V2)
ship their tokenizer as a `tokenizer.json`; `HFTokenizerVocabulary` makes one a
`seqio.Vocabulary`, so a task tokenizes exactly as the model's own tokenizer does.
T5-style SentencePiece models go through `sentencepiece_vocabulary`.

Conventions, where seqio's (made for T5's SentencePiece: 0=PAD, 1=EOS, 2=UNK)
meet a Hugging Face tokenizer's:
- encode never adds BOS/EOS (seqio's `add_eos` appends `eos_id`), and special
  tokens written in the text (`<|im_start|>`...) become their single ids, which
  chat-formatted text needs.
- decode stops before the first EOS, which ends the text and does not appear in
  it (as with SentencePiece, whose EOS decodes to nothing); every other id,
  special tokens and padding included, decodes to its text. Ids past the
  tokenizer's vocabulary (a model's embedding is often larger) decode to nothing.
- `pad_id` is the pad token's id, or 0 when the tokenizer has none. Either is a
  real token: tasks.feature_converters tells padding by segment ids, not by id.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import threading
from collections.abc import Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf
import tokenizers

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"


class VocabularyError(ValueError):
    """A tokenizer that cannot serve as a vocabulary as asked; the message says what to pass."""


def _token_name(value: object) -> str | None:
    # tokenizer_config.json names a token as a string or, in older files, as a
    # serialized AddedToken {"content": ..., ...}.
    return value.get("content") if isinstance(value, dict) else value  # type: ignore[return-value]


@gin.configurable
class HFTokenizerVocabulary(seqio.Vocabulary):
    """A Hugging Face `tokenizer.json` (from `tokenizers`) as a SeqIO vocabulary.

    Args:
      path: the tokenizer.json, or the folder holding it; any tf.io.gfile path (gs://...).
      eos_token: the token `add_eos` appends and decoding stops at (Qwen 2.5
        Instruct: "<|im_end|>", Llama 3.1: "<|eot_id|>"); default: `eos_token`
        of the tokenizer_config.json beside it.
      pad_token: the token `pad_id` names; default: that file's `pad_token`, and
        id 0 when neither names one.
    """

    def __init__(self, path: str, eos_token: str | None = None, pad_token: str | None = None):
        super().__init__(extra_ids=0)  # sentinel ids are a span-corruption (T5) need, not a decoder's
        path = str(path)
        if tf.io.gfile.isdir(path):
            path = posixpath.join(path, TOKENIZER_FILE)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"no tokenizer file at {path}: give a tokenizer.json or the folder holding one")
        self._path = path
        content = self._read(path)
        self._sha256 = hashlib.sha256(content).hexdigest()
        self._tokenizer: tokenizers.Tokenizer | None = tokenizers.Tokenizer.from_str(content.decode("utf-8"))
        self._lock = threading.Lock()

        config_path = posixpath.join(posixpath.dirname(path), CONFIG_FILE)
        config = json.loads(self._read(config_path)) if tf.io.gfile.exists(config_path) else {}
        eos_token = eos_token or _token_name(config.get("eos_token"))
        if not eos_token:
            raise VocabularyError(f"{path}: no {CONFIG_FILE} beside it names an eos_token: pass eos_token= "
                                  f"(the token that ends a sequence, e.g. '<|im_end|>' or '<|eot_id|>')")
        pad_token = pad_token or _token_name(config.get("pad_token"))
        bos_token = _token_name(config.get("bos_token"))
        unk_token = _token_name(config.get("unk_token"))
        self._eos_id = self._id_of(eos_token, "eos_token")
        self._pad_id = self._id_of(pad_token, "pad_token") if pad_token else seqio.vocabularies.PAD_ID
        self._bos_id = self._tokenizer.token_to_id(bos_token) if bos_token else None
        self._unk_id = self._tokenizer.token_to_id(unk_token) if unk_token else None
        # Ids need not be contiguous (added tokens may sit past gaps): the size is the largest id + 1.
        self._size = max(self._tokenizer.get_vocab(with_added_tokens=True).values()) + 1

    @staticmethod
    def _read(path: str) -> bytes:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()

    def _id_of(self, token: str, argument: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            special = sorted(t.content for t in self.tokenizer.get_added_tokens_decoder().values())
            raise VocabularyError(f"{self._path}: {argument} {token!r} is not a token of this tokenizer; "
                                  f"pass {argument}= one of its special tokens: {special}")
        return token_id

    # Pickling (gin deep-copies configurables' arguments, Beam ships them to workers)
    # keeps the path and the digest; the tokenizer is read again on first use.
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_tokenizer"], state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _tokenizer=None, _lock=threading.Lock())

    @property
    def tokenizer(self) -> tokenizers.Tokenizer:
        """The `tokenizers.Tokenizer`, read on first use after unpickling."""
        with self._lock:
            if self._tokenizer is None:
                content = self._read(self._path)
                if hashlib.sha256(content).hexdigest() != self._sha256:
                    raise VocabularyError(f"{self._path} changed since this vocabulary was made "
                                          f"(sha256 {self._sha256}): make the vocabulary again")
                self._tokenizer = tokenizers.Tokenizer.from_str(content.decode("utf-8"))
            return self._tokenizer

    @property
    def bos_id(self) -> int | None:
        return self._bos_id

    @property
    def eos_id(self) -> int:
        return self._eos_id

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def unk_id(self) -> int | None:
        return self._unk_id

    @property
    def _base_vocab_size(self) -> int:
        return self._size

    def _encode(self, s: str) -> Sequence[int]:
        return self.tokenizer.encode(s, add_special_tokens=False).ids

    def _decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids]
        if self._eos_id in ids:
            ids = ids[:ids.index(self._eos_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    # The tf versions run the same Rust tokenizer through tf.numpy_function (stateless:
    # same input, same ids), so they work in graph mode and match the Python ones exactly.
    def _encode_rows(self, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch([t.decode("utf-8") for t in texts], add_special_tokens=False)
        ids = [e.ids for e in encodings]
        return (np.fromiter((i for row in ids for i in row), np.int32),
                np.asarray([len(row) for row in ids], np.int64))

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor | tf.RaggedTensor:
        """A string scalar -> int32 [length]; strings of shape [d1, ..., dn] ->
        int32 ragged [d1, ..., dn, (length)], as seqio's tokenize expects."""
        s = tf.convert_to_tensor(s, tf.string)
        if s.shape.rank is None:
            raise VocabularyError("encode_tf needs a string tensor of known rank")
        flat = tf.reshape(s, [-1])
        ids, lengths = tf.numpy_function(self._encode_rows, [flat], (tf.int32, tf.int64), stateful=False)
        ids.set_shape([None])
        lengths.set_shape(flat.shape)
        if s.shape.rank == 0:
            return ids
        tokens = tf.RaggedTensor.from_row_lengths(ids, lengths, validate=False)
        for axis in range(s.shape.rank - 1, 0, -1):  # put back the dimensions the reshape merged
            tokens = tf.RaggedTensor.from_uniform_row_length(tokens, tf.shape(s, out_type=tf.int64)[axis])
        return tokens

    def _decode_rows(self, ids: np.ndarray, splits: np.ndarray) -> np.ndarray:
        rows = [ids[start:end].tolist() for start, end in zip(splits[:-1], splits[1:])]
        rows = [row[:row.index(self._eos_id)] if self._eos_id in row else row for row in rows]
        texts = self.tokenizer.decode_batch(rows, skip_special_tokens=False)
        return np.asarray([t.encode("utf-8") for t in texts], dtype=object).reshape(len(rows))

    def _decode_tf(self, ids: tf.Tensor | tf.RaggedTensor) -> tf.Tensor:
        """int32 [..., length] (dense) or [batch, (length)] (ragged) -> strings [...] / [batch]."""
        if isinstance(ids, tf.RaggedTensor):
            if ids.shape.rank != 2 or ids.ragged_rank != 1:
                raise VocabularyError(f"decode_tf takes a ragged [batch, (length)] tensor, not {ids.shape}")
            rows, outer_shape = ids, tf.shape(ids.row_splits)[:1] - 1
        else:
            ids = tf.convert_to_tensor(ids)
            if ids.shape.rank is None or ids.shape.rank == 0:
                raise VocabularyError("decode_tf needs ids of shape [..., length]")
            shape = tf.shape(ids)
            rows = tf.RaggedTensor.from_tensor(tf.reshape(ids, [tf.reduce_prod(shape[:-1]), shape[-1]]))
            outer_shape = shape[:-1]
        texts = tf.numpy_function(self._decode_rows, [tf.cast(rows.values, tf.int32), rows.row_splits],
                                  tf.string, stateful=False)
        return tf.reshape(texts, outer_shape)

    def __eq__(self, other: object) -> bool:
        # The same file content with the same special ids, wherever the file lives.
        if not isinstance(other, HFTokenizerVocabulary):
            return False
        return (self._sha256, self._eos_id, self._pad_id) == (other._sha256, other._eos_id, other._pad_id)

    def __hash__(self) -> int:
        return hash((self._sha256, self._eos_id, self._pad_id))

    def __repr__(self) -> str:
        return (f"HFTokenizerVocabulary({self._path!r}, eos_id={self._eos_id}, pad_id={self._pad_id}, "
                f"sha256={self._sha256[:12]})")


@gin.configurable
def sentencepiece_vocabulary(model_path: str, extra_ids: int = 0) -> seqio.SentencePieceVocabulary:
    """A SentencePiece model as seqio's own vocabulary (T5-style models).

    seqio reads the model lazily and a bad path surfaces deep in a tf.data
    pipeline; this checks up front that the file exists and that the model has
    the EOS that `add_eos` appends.
    """
    if not tf.io.gfile.exists(model_path):
        raise FileNotFoundError(f"no SentencePiece model at {model_path}")
    vocabulary = seqio.SentencePieceVocabulary(str(model_path), extra_ids=extra_ids)
    if vocabulary.eos_id is None or vocabulary.eos_id < 0:
        raise VocabularyError(f"{model_path} has no EOS piece: train it with eos_id >= 0 (seqio appends EOS)")
    return vocabulary
