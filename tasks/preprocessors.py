"""Assembled CodeI/O examples into token ids and a loss mask, in a model's chat format.

An example (one row of the TFRecords the `write` stage makes) becomes a chat:
the system message, the prompt, the first answer, and for each later turn the
feedback (in the words the teacher saw it: prompts.REVISION) and the answer.
The chat is rendered by codeio_jax.models.chat_format exactly as the family's Hugging Face
template renders it or, given `chat_template` (a local model folder), by
codeio_jax.models.chat_template in that folder's own template, and each piece
is tokenized on its own, so the mask is exact: 1 on assistant text and its
end-of-turn marker, 0 elsewhere. Pieces meet at special tokens or at the edges
of a turn's content, where byte-level BPE vocabularies do not merge across anyway.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from codeio_jax.data.prompts import REVISION
from codeio_jax.models import chat_format
from codeio_jax.models.chat_template import FolderChatTemplate, folder_template

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


def template_of(chat_template: str | None) -> FolderChatTemplate | None:
    """The folder's template for a task's `chat_template` argument (None: the family's)."""
    return None if chat_template is None else folder_template(chat_template)


def tokenize_messages(messages: Sequence[Mapping[str, str]], family: str, vocabulary: seqio.Vocabulary,
                      template: FolderChatTemplate | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, loss weights) of a chat, in `template` or else the family's format."""
    pieces = template.segments(messages) if template is not None else chat_format.segments(messages, family)
    ids: list[int] = []
    weights: list[int] = []
    for text, trained in pieces:
        piece = vocabulary.encode(text)
        ids.extend(piece)
        weights.extend([int(trained)] * len(piece))
    return np.asarray(ids, np.int32), np.asarray(weights, np.int32)


def tokenize_chat(example: Mapping[str, str], family: str, vocabulary: seqio.Vocabulary,
                  max_turns: int, template: FolderChatTemplate | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, loss weights) of an example's chat."""
    return tokenize_messages(conversation(example, family, max_turns), family, vocabulary, template)


def chat_targets(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature],
                 family: str, max_turns: int, chat_template: str | None = None) -> tf.data.Dataset:
    """A SeqIO preprocessor: text fields in, `targets` and `loss_weights` out
    (the other fields ride along for evaluation and inspection).
    chat_template: a local model folder whose own chat template renders the chats
      instead of the family's; `family` then only decides the system message's place
      (gemma2 has no system role: see `conversation`)."""
    vocabulary = output_features["targets"].vocabulary
    template = template_of(chat_template)

    def encode(*fields):
        example = {name: value.decode("utf-8") for name, value in zip(TEXT_FIELDS, fields)}
        return tokenize_chat(example, family, vocabulary, max_turns, template)

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
