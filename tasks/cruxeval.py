"""CRUXEval as a TFDS dataset, and the SeqIO eval tasks `cruxeval_input` and
`cruxeval_output`, whose metric is execution-verified pass@1.

The builder reads ../shared/data/cruxeval/cruxeval.jsonl (or the file given)
into a `test` split of 800 samples. Each eval task asks the chat prompt of
codeio_jax.verify.cruxeval_prompts in the model family's template (or a model
folder's own, given `chat_template`); the
prediction is postprocessed into a CRUXEval generation and scored in our
sandbox by the official rules (codeio_jax.verify.cruxeval).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Mapping, Sequence

import gin
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from codeio_jax.models import chat_format
from codeio_jax.models.chat_template import folder_template
from codeio_jax.verify import cruxeval, cruxeval_prompts

TFDS_NAME = "cruxeval:1.0.0"
TASK_NAMES = ("cruxeval_input", "cruxeval_output")


class Cruxeval(tfds.core.GeneratorBasedBuilder):
    """CRUXEval (Gu et al., 2024): 800 Python functions with one input and output each."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "The 800 samples of facebookresearch/cruxeval."}

    def __init__(self, *, source_path: str | Path | None = None, **kwargs):
        self._source_path = Path(source_path or cruxeval.DEFAULT_DATA)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        text = tfds.features.Text()
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({"id": text, "code": text, "input": text, "output": text}),
            homepage="https://github.com/facebookresearch/cruxeval")

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples(self._source_path)}

    def _generate_examples(self, path: Path):
        for sample in cruxeval.load_samples(path).values():
            yield sample.id, dataclasses.asdict(sample)


def prepare(data_dir: str | Path, source_path: str | Path | None = None) -> Cruxeval:
    """Build the TFDS dataset in `data_dir` (once; later calls find it there)."""
    builder = Cruxeval(data_dir=str(data_dir), source_path=source_path)
    builder.download_and_prepare()
    return builder


def prompt_features(dataset: tf.data.Dataset, mode: str, family: str,
                    chat_template: str | None = None) -> tf.data.Dataset:
    """`inputs`: the chat prompt in the family's template (or the folder
    `chat_template`'s own), ready for the answer; `targets`: the true answer
    (the output, or the call with the true input)."""
    template = None if chat_template is None else folder_template(chat_template)

    def render(code, given_input, output):
        chat = cruxeval_prompts.messages(mode, code.decode(), given_input.decode(), output.decode())
        if family == "gemma2":  # no system role in Gemma's template: it leads the user turn
            chat = [{"role": "user", "content": f"{chat[0]['content']}\n\n{chat[1]['content']}"}]
        if template is not None:
            return template.render(chat, add_generation_prompt=True)
        return chat_format.render(chat, family, add_generation_prompt=True)

    def apply(example):
        text = tf.numpy_function(render, [example["code"], example["input"], example["output"]],
                                 tf.string, stateful=False)
        text.set_shape([])
        target = example["output"] if mode == "output" else tf.strings.join(["f(", example["input"], ")"])
        return {"inputs": text, "targets": target, "id": example["id"]}

    return dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)


def postprocess(text: str, example: Mapping | None = None, is_target: bool = False, *, mode: str):
    """A target becomes its sample id (the metric looks the sample up); a
    prediction becomes the CRUXEval generation read from the reply."""
    if is_target:
        sample_id = example["id"]
        return sample_id.decode() if isinstance(sample_id, bytes) else str(sample_id)
    return cruxeval_prompts.generation_from_reply(mode, text)


def pass_at_1(targets: Sequence[str], predictions: Sequence[str], *, mode: str,
              source_path: str | Path | None = None, workers: int | None = None) -> dict[str, float]:
    """Execution-verified pass@1 (percent) of one generation per sample."""
    from codeio_jax.execution import Limits, Sandbox, SandboxConfig

    samples = cruxeval.load_samples(source_path or cruxeval.DEFAULT_DATA)
    generations = {sample_id: [generation] for sample_id, generation in zip(targets, predictions)}
    config = SandboxConfig(workers=workers, limits=Limits(timeout_s=cruxeval.TIMEOUT_S))
    with Sandbox(config) as sandbox:
        report = cruxeval.score(generations, mode, samples, sandbox)
    return {"pass@1": report.pass_at_1}


@gin.configurable
def register_cruxeval_tasks(data_dir: str | Path = gin.REQUIRED, vocabulary: seqio.Vocabulary = gin.REQUIRED,
                            family: str = gin.REQUIRED, source_path: str | Path | None = None,
                            prefix: str = "", sandbox_workers: int | None = None,
                            chat_template: str | None = None) -> list[str]:
    """Build the TFDS dataset if needed and register the two eval tasks.
    chat_template: a local model folder whose own chat template renders the
      prompts instead of the family's; `family` then only decides where the system
      message goes (gemma2 folds it into the user turn)."""
    if chat_template is not None:
        folder_template(chat_template)  # a folder without a template fails here, not mid-evaluation
    prepare(data_dir, source_path)
    features = {"inputs": seqio.Feature(vocabulary, add_eos=False, dtype=tf.int32),
                "targets": seqio.Feature(vocabulary, add_eos=False, dtype=tf.int32)}
    names = []
    for mode in ("input", "output"):
        name = f"{prefix}cruxeval_{mode}"
        seqio.TaskRegistry.remove(name)
        seqio.TaskRegistry.add(
            name,
            source=seqio.TfdsDataSource(TFDS_NAME, tfds_data_dir=str(data_dir), splits=("test",),
                                        tfds_builder_kwargs={"source_path": str(source_path)
                                                             if source_path else None}),
            output_features=features,
            preprocessors=[functools.partial(prompt_features, mode=mode, family=family,
                                             chat_template=chat_template),
                           seqio.preprocessors.tokenize],
            postprocess_fn=functools.partial(postprocess, mode=mode),
            metric_fns=[functools.partial(pass_at_1, mode=mode, source_path=source_path,
                                          workers=sandbox_workers)],
            shuffle_buffer_size=None)
        names.append(name)
    return names
