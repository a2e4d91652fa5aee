"""Instruction data for the paper's second stage: a JSONL of chats as a SeqIO task.

Each line is {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}
(the form instruction datasets are distributed in); it is rendered in the
model family's chat format, or in a model folder's own chat template, and
tokenized with the loss on assistant turns only, exactly as the CodeI/O tasks
are, so the same feature converter packs both.
"""

from __future__ import annotations

import json

import gin
import seqio
import tensorflow as tf

from tasks import preprocessors
from tasks.codeio import output_features


@gin.configurable
def register_chat_jsonl_task(name: str = gin.REQUIRED, path: str = gin.REQUIRED,
                             vocabulary: seqio.Vocabulary = gin.REQUIRED, family: str = gin.REQUIRED,
                             chat_template: str | None = None) -> str:
    """Register `name` over the chats in `path` (train split); replaces an earlier one.
    chat_template: a local model folder whose own chat template renders the chats
      instead of the family's (its system handling included: the chats are the file's)."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"instruction data {path} does not exist")
    template = preprocessors.template_of(chat_template)  # a folder without one fails here, not mid-epoch

    def tokenize(line):
        try:
            messages = json.loads(line.decode("utf-8"))["messages"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: a line is not a chat ({exc}): {line[:200]!r}") from None
        return preprocessors.tokenize_messages(messages, family, vocabulary, template)

    def preprocess(dataset):
        def apply(line):  # TextLineDataSource yields the lines themselves
            ids, weights = tf.numpy_function(tokenize, [line], (tf.int32, tf.int32), stateful=False)
            ids.set_shape([None])
            weights.set_shape([None])
            return {"targets": ids, "loss_weights": weights}

        return dataset.filter(lambda line: tf.strings.length(tf.strings.strip(line)) > 0).map(
            apply, num_parallel_calls=tf.data.AUTOTUNE)

    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(name, source=seqio.TextLineDataSource({"train": path}),
                           output_features=output_features(vocabulary),
                           preprocessors=[preprocess, preprocessors.drop_too_long])
    return name
