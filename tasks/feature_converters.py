"""A decoder-only feature converter whose loss falls only where the task says.

SeqIO's LMFeatureConverter puts the loss on every target token, and its
PrefixLMFeatureConverter on everything after one prefix; a CodeI/O++ example
is a conversation with two assistant turns and the feedback between them, so
the loss mask has holes. Our chat tasks give, beside `targets`, a
`loss_weights` feature of the same length (1 on assistant text and its
end-of-turn marker, 0 on system, user and role headers); this converter packs
both together and hands that mask on as `decoder_loss_weights`.

Token id 0 is a real token in Hugging Face vocabularies ("!" for Qwen and
Llama 3), while SeqIO's packing takes every 0 for padding and squeezes it out.
So both features are shifted up by one while they are packed or padded, and
back after; padding is then told by `decoder_segment_ids` (0), which this
converter always emits, packed or not, with `decoder_positions`.
"""

from __future__ import annotations

from typing import Mapping

import seqio
import tensorflow as tf


class ChatLMFeatureConverter(seqio.LMFeatureConverter):
    """Example, packed to length 8:

        [{"targets": [5, 0, 7, 1], "loss_weights": [0, 0, 1, 1]},
         {"targets": [8, 9, 1],    "loss_weights": [0, 1, 1]}]
    ->  decoder_target_tokens  [5, 0, 7, 1, 8, 9, 1, 0]
        decoder_input_tokens   [0, 5, 0, 7, 0, 8, 9, 0]
        decoder_loss_weights   [0, 0, 1, 1, 0, 1, 1, 0]
        decoder_segment_ids    [1, 1, 1, 1, 2, 2, 2, 0]
        decoder_positions      [0, 1, 2, 3, 0, 1, 2, 0]
    """

    TASK_FEATURES = {
        "targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
        "loss_weights": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
    }
    MODEL_FEATURES = {
        **seqio.LMFeatureConverter.MODEL_FEATURES,
        "decoder_segment_ids": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
        "decoder_positions": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
    }

    def __call__(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        # The mask is as long as the targets by construction: callers give one length.
        lengths = dict(task_feature_lengths)
        lengths.setdefault("loss_weights", lengths["targets"])
        if lengths["loss_weights"] != lengths["targets"]:
            raise ValueError("loss_weights must have the length of targets, got "
                             f"{lengths['loss_weights']} and {lengths['targets']}")
        # seqio trims only the features its caller named, usually just targets:
        # the mask follows the targets it belongs to.
        length = lengths["targets"]
        ds = ds.map(lambda ex: {**ex, "loss_weights": ex["loss_weights"][:length]},
                    num_parallel_calls=tf.data.AUTOTUNE)
        return super().__call__(ds, lengths)

    def _convert_features(self, ds: tf.data.Dataset,
                          task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        shifted = ds.map(lambda ex: {**ex, "targets": ex["targets"] + 1,
                                     "loss_weights": ex["loss_weights"] + 1},
                         num_parallel_calls=tf.data.AUTOTUNE)
        return super()._convert_features(shifted, task_feature_lengths)

    def _convert_example(self, features: Mapping[str, tf.Tensor]) -> Mapping[str, tf.Tensor]:
        real = features["targets"] > 0
        targets = tf.maximum(features["targets"] - 1, 0)
        if self.pack:
            segment_ids = features["targets_segment_ids"]
            positions = features["targets_positions"]
        else:
            segment_ids = tf.cast(real, tf.int32)
            positions = tf.maximum(tf.cumsum(segment_ids) - 1, 0) * segment_ids
        inputs = seqio.utils.make_autoregressive_inputs(
            targets, sequence_id=segment_ids if self.pack else None, bos_id=self.bos_id)
        return {
            "decoder_target_tokens": targets,
            "decoder_input_tokens": inputs,
            "decoder_loss_weights": tf.maximum(features["loss_weights"] - 1, 0),
            "decoder_segment_ids": segment_ids,
            "decoder_positions": positions,
        }

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
        length = task_feature_lengths["targets"]
        return {name: length for name in self.MODEL_FEATURES}
