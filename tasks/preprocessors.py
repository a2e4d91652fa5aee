"""Assembled CodeI/O examples into token ids and a loss mask, in a model family's chat format.

An example (one row of the TFRecords the `write` stage makes) becomes a chat:
the system message, the prompt, the first answer, and for each later turn the
feedback (in the words the teacher saw it: prompts.REVISION) and the answer.
The chat is rendered by codeio_jax.models.chat_format exactly as the family's Hugging Face
template renders it, and each piece is tokenized on its own, so the mask is
exact: 1 on assistant text and its end-of-turn marker, 0 elsewhere. Pieces
meet at special tokens or at the edges of a turn's content, where byte-level
BPE vocabularies do not merge across anyway.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import seqio
import tensorflow as tf

from codeio_jax.data.prompts import REVISION
from codeio_jax.models import chat_format

TEXT_FIELDS = ("system", "prompt", "turn_1", "feedback_1", "turn_2", "feedback_2")


def conversation(example: Mapping[str, str], family: str, max_turns: int) -> list[dict]:
    """The chat of an example, up to `max_turns` assistant turns (only those it has)."""
    messages = []
    prompt = example["prompt"]
    if example.get("system"):
        if family == "gemma2":  # no system role: Gemma's own guidance is to lead the user turn with it
            prompt = f"{example['system']}\n\n{prompt}"
        else:
            messages.append({"role": "system", "content": example["system"]})
    messages.append({"role": "user", "content": prompt})
    for turn in range(1, max_turns + 1):
        reply = example.get(f"turn_{turn}", "")
        if not reply:
            break
        if turn > 1:
            feedback = example.get(f"feedback_{turn - 1}", "")
            messages.append({"role": "user", "content": REVISION.format(feedback=feedback.strip())})
        messages.append({"role": "assistant", "content": reply})
    return messages


def tokenize_chat(example: Mapping[str, str], family: str, vocabulary: seqio.Vocabulary,
                  max_turns: int) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, loss weights) of an example's chat."""
    ids: list[int] = []
    weights: list[int] = []
    for text, trained in chat_format.segments(conversation(example, family, max_turns), family):
        piece = vocabulary.encode(text)
        ids.extend(piece)
        weights.extend([int(trained)] * len(piece))
    return np.asarray(ids, np.int32), np.asarray(weights, np.int32)


def chat_targets(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature],
                 family: str, max_turns: int) -> tf.data.Dataset:
    """A SeqIO preprocessor: text fields in, `targets` and `loss_weights` out
    (the other fields ride along for evaluation and inspection)."""
    vocabulary = output_features["targets"].vocabulary

    def encode(*fields):
        example = {name: value.decode("utf-8") for name, value in zip(TEXT_FIELDS, fields)}
        return tokenize_chat(example, family, vocabulary, max_turns)

    def apply(example):
        ids, weights = tf.numpy_function(encode, [example[name] for name in TEXT_FIELDS],
                                         (tf.int32, tf.int32), stateful=False)
        ids.set_shape([None])
        weights.set_shape([None])
        return {"targets": ids, "loss_weights": weights, "id": example["id"], "task": example["task"]}

    return dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)


def keep(dataset: tf.data.Dataset, tasks: tuple[str, ...] = (), min_turns: int = 1,
         max_turns: int | None = None, statuses: tuple[str, ...] = ()) -> tf.data.Dataset:
    """Only examples of these tasks, turn counts and final statuses (empty: any)."""

    def wanted(example):
        ok = example["turns"] >= min_turns
        if max_turns is not None:
            ok = tf.logical_and(ok, example["turns"] <= max_turns)
        if tasks:
            ok = tf.logical_and(ok, tf.reduce_any(tf.equal(example["task"], list(tasks))))
        if statuses:
            ok = tf.logical_and(ok, tf.reduce_any(tf.equal(example["status"], list(statuses))))
        return ok

    return dataset.filter(wanted)


def drop_too_long(dataset: tf.data.Dataset, sequence_length: Mapping[str, int] | None = None) -> tf.data.Dataset:
    """Drop examples longer than the packed length: trimming would cut off the
    answers at the end (the only tokens with loss), leaving examples that teach
    nothing. SeqIO passes the run's lengths; without them (inspection) all stay."""
    if not sequence_length or not sequence_length.get("targets"):
        return dataset
    limit = sequence_length["targets"]
    return dataset.filter(lambda example: tf.shape(example["targets"])[0] <= limit)
