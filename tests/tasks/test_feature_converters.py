"""The chat feature converter: loss only where the task says, token id 0 kept."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tasks.feature_converters import ChatLMFeatureConverter  # noqa: E402


def dataset(rows):
    spec = {"targets": tf.TensorSpec([None], tf.int32), "loss_weights": tf.TensorSpec([None], tf.int32)}
    return tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=spec)


ROWS = [{"targets": [5, 0, 7, 1], "loss_weights": [0, 0, 1, 1]},
        {"targets": [8, 9, 1], "loss_weights": [0, 1, 1]},
        {"targets": [0, 0, 3], "loss_weights": [1, 0, 1]}]


def test_packing_keeps_zeros_and_the_mask():
    [first, second] = list(ChatLMFeatureConverter(pack=True)(dataset(ROWS), {"targets": 8}).as_numpy_iterator())
    np.testing.assert_array_equal(first["decoder_target_tokens"], [5, 0, 7, 1, 8, 9, 1, 0])
    np.testing.assert_array_equal(first["decoder_input_tokens"], [0, 5, 0, 7, 0, 8, 9, 0])
    np.testing.assert_array_equal(first["decoder_loss_weights"], [0, 0, 1, 1, 0, 1, 1, 0])
    np.testing.assert_array_equal(first["decoder_segment_ids"], [1, 1, 1, 1, 2, 2, 2, 0])
    np.testing.assert_array_equal(first["decoder_positions"], [0, 1, 2, 3, 0, 1, 2, 0])
    # A row of real zeros is not mistaken for padding.
    np.testing.assert_array_equal(second["decoder_target_tokens"][:3], [0, 0, 3])
    np.testing.assert_array_equal(second["decoder_loss_weights"][:4], [1, 0, 1, 0])
    np.testing.assert_array_equal(second["decoder_segment_ids"][:4], [1, 1, 1, 0])


def test_unpacked_rows_are_padded_and_marked():
    rows = list(ChatLMFeatureConverter(pack=False)(dataset(ROWS), {"targets": 5}).as_numpy_iterator())
    np.testing.assert_array_equal(rows[2]["decoder_target_tokens"], [0, 0, 3, 0, 0])
    np.testing.assert_array_equal(rows[2]["decoder_segment_ids"], [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(rows[2]["decoder_positions"], [0, 1, 2, 0, 0])
    np.testing.assert_array_equal(rows[2]["decoder_loss_weights"], [1, 0, 1, 0, 0])


def test_a_mask_of_another_length_is_refused():
    with pytest.raises(ValueError, match="length of targets"):
        ChatLMFeatureConverter(pack=True)(dataset(ROWS), {"targets": 8, "loss_weights": 4})
