"""SeqIO tasks and mixtures over the TFRecords of the data pipeline.

    codeio_output_prediction   first turns of output-prediction examples   (CodeI/O)
    codeio_input_prediction    first turns of input-prediction examples    (CodeI/O)
    codeio_pp_single_turn      examples answered right at the first turn   (CodeI/O++)
    codeio_pp_revision         examples with a revision: every turn, the loss on each answer
    mixtures: codeio = the two prediction tasks; codeio_pp = single turn + revision,
    each task weighed by its number of examples (the write stage counts them)

Every task yields `targets` (token ids of the chat in the model family's
template, or in a model folder's own one) and `loss_weights` (1 on assistant
turns only), for tasks.feature_converters.ChatLMFeatureConverter. Registration
is a function, not an import side effect, because the data folder, the
vocabulary and the chat format are the experiment's choice (gin binds them in
the trainer).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import gin
import seqio
import tensorflow as tf

from codeio_jax.data.shards import EXAMPLES as EXAMPLES_NAME  # the `write` stage's shard prefix
from tasks import preprocessors

TEXT_FEATURES = ("id", "record_id", "task", "status", "system", "prompt", "turn_1", "feedback_1",
                 "turn_2", "feedback_2", "refcode", "funcname", "input", "output")
TASK_NAMES = ("codeio_output_prediction", "codeio_input_prediction", "codeio_pp_single_turn",
              "codeio_pp_revision")


def feature_description() -> dict:
    described = {name: tf.io.FixedLenFeature([], tf.string) for name in TEXT_FEATURES}
    described["turns"] = tf.io.FixedLenFeature([], tf.int64)
    return described


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
    return {
        "targets": seqio.Feature(vocabulary, add_eos=False, dtype=tf.int32),
        "loss_weights": seqio.Feature(seqio.PassThroughVocabulary(2), add_eos=False, dtype=tf.int32),
    }


@gin.configurable
def register_codeio_tasks(data_dir: str | Path = gin.REQUIRED, vocabulary: seqio.Vocabulary = gin.REQUIRED,
                          family: str = gin.REQUIRED, prefix: str = "", statuses: tuple[str, ...] = (),
                          max_revision_turns: int = 2, chat_template: str | None = None) -> list[str]:
    """Register the tasks and mixtures (names get `prefix`) over the shards in
    `data_dir`; an earlier registration under the same names is replaced.
    family: the chat format (codeio_jax.models.chat_format: qwen2, llama3, gemma2,
      deepseek_v2).
    statuses: keep only examples whose final verdict is one of these (e.g.
      ("correct",)); empty keeps all, as CodeI/O does.
    chat_template: a local model folder (tokenizer_config.json's chat_template or
      chat_template.jinja) whose own template renders the chats instead of the
      family's; `family` then only decides where the system message goes (gemma2
      folds it into the first user turn)."""
    shards = str(Path(data_dir) / f"{EXAMPLES_NAME}.tfrecord-*")
    if not tf.io.gfile.glob(shards):
        raise FileNotFoundError(f"no TFRecord shards match {shards}: run the pipeline's write stage first")
    preprocessors.template_of(chat_template)  # a folder without a template fails here, not in the input pipeline
    source = seqio.TFExampleDataSource({"train": shards}, feature_description())
    features = output_features(vocabulary)
    selections = {
        "codeio_output_prediction": (dict(tasks=("output_prediction",)), 1),
        "codeio_input_prediction": (dict(tasks=("input_prediction",)), 1),
        "codeio_pp_single_turn": (dict(max_turns=1), 1),
        "codeio_pp_revision": (dict(min_turns=2), max_revision_turns),
    }
    names = []
    for name, (selection, turns) in selections.items():
        full = prefix + name
        seqio.TaskRegistry.remove(full)
        seqio.TaskRegistry.add(full, source=source, output_features=features, preprocessors=[
            functools.partial(preprocessors.keep, statuses=statuses, **selection),
            functools.partial(preprocessors.chat_targets, family=family, max_turns=turns,
                              chat_template=chat_template),
            preprocessors.drop_too_long,
        ])
        names.append(full)
    sizes = task_sizes(Path(data_dir))
    for mixture, members in (("codeio", TASK_NAMES[:2]), ("codeio_pp", TASK_NAMES[2:])):
        seqio.MixtureRegistry.remove(prefix + mixture)
        # Weighed by size, so one pass over a mixture is one pass over its data;
        # a task without examples (no revisions, say) is left out.
        weighted = [(prefix + task, sizes.get(task)) for task in members if sizes.get(task, 1) > 0]
        if weighted:
            seqio.MixtureRegistry.add(prefix + mixture, [(name, float(size or 1)) for name, size in weighted])
            names.append(prefix + mixture)
    return names


def task_sizes(data_dir: Path) -> dict[str, int]:
    """Examples per task, from the counts the write stage leaves beside the
    shards (empty when they are missing: then every task weighs the same)."""
    path = data_dir / f"{EXAMPLES_NAME}.counts.json"
    if not path.exists():
        return {}
    counts = json.loads(path.read_text())
    by_task, by_turns = counts.get("by_task", {}), counts.get("by_turns", {})
    return {"codeio_output_prediction": by_task.get("output_prediction", 0),
            "codeio_input_prediction": by_task.get("input_prediction", 0),
            "codeio_pp_single_turn": by_turns.get("1", 0),
            "codeio_pp_revision": sum(n for turns, n in by_turns.items() if turns.isdigit() and int(turns) > 1)}
