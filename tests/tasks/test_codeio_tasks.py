"""The CodeI/O SeqIO tasks over the pipeline's real TFRecords."""

import json

import pytest

from codeio_jax.data.pipeline import ChatTeacherSpec, TraceTeacherSpec, run_pipeline
from codeio_jax.data.prompts import REVISION
from tests.data.test_pipeline import small_corpus, student
from tests.models.gguf_files import smollm2_tokenizer_folder
from tests.teachers.chat_server import ChatServer

tf = pytest.importorskip("tensorflow")
seqio = pytest.importorskip("seqio")

from tasks import codeio  # noqa: E402
from tasks.feature_converters import ChatLMFeatureConverter  # noqa: E402
from tasks.preprocessors import conversation  # noqa: E402
from tasks.vocabularies import HFTokenizerVocabulary  # noqa: E402


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """CodeI/O++ data: a weak model's first turn, the trace teacher's revisions."""
    tmp = tmp_path_factory.mktemp("codeio")
    with ChatServer(answer=student) as server:
        spec = ChatTeacherSpec(base_url=server.base_url, model="student", api_key_env=None)
        report = run_pipeline(work_dir=tmp / "run", source=small_corpus(tmp, 4), per_task=2, rounds=1,
                              turn_teachers=[spec, TraceTeacherSpec()], shards=3, workers=2)
    vocabulary = seqio.ByteVocabulary()
    names = codeio.register_codeio_tasks(data_dir=report.work_dir / "tfrecords", vocabulary=vocabulary,
                                         family="qwen2", prefix="test_")
    yield report, vocabulary
    for name in names:
        seqio.TaskRegistry.remove(name)
        seqio.MixtureRegistry.remove(name)


def examples_of(name):
    task = seqio.get_mixture_or_task(name)
    return list(task.get_dataset(sequence_length=None, split="train", shuffle=False).as_numpy_iterator())


def test_tasks_select_what_their_names_say(pipeline_run):
    report, _ = pipeline_run
    rows = {row["id"]: row for row in map(json.loads, report.examples.read_text().splitlines())}
    assert len(report.shards) == 3
    outputs = examples_of("test_codeio_output_prediction")
    inputs = examples_of("test_codeio_input_prediction")
    assert sorted(e["id"].decode() for e in outputs + inputs) == sorted(rows)
    assert {rows[e["id"].decode()]["task"] for e in outputs} == {"output_prediction"}
    single = examples_of("test_codeio_pp_single_turn")
    revision = examples_of("test_codeio_pp_revision")
    assert revision and {rows[e["id"].decode()]["turns"] for e in revision} == {2}
    assert {rows[e["id"].decode()]["turns"] for e in single} <= {1}
    assert len(single) + len(revision) == len(rows)


def test_loss_falls_on_assistant_turns_only(pipeline_run):
    report, vocabulary = pipeline_run
    rows = {row["id"]: row for row in map(json.loads, report.examples.read_text().splitlines())}
    [example, *_] = examples_of("test_codeio_pp_revision")
    row = rows[example["id"].decode()]
    ids, weights = example["targets"], example["loss_weights"]
    assert len(ids) == len(weights)
    trained = vocabulary.decode([int(i) for i, w in zip(ids, weights) if w])
    assert trained == row["turn_1"] + "<|im_end|>" + row["turn_2"] + "<|im_end|>"
    whole = vocabulary.decode(ids.tolist())
    assert whole.startswith("<|im_start|>system\n" + row["system"])
    assert REVISION.format(feedback=row["feedback_1"]) in whole  # the feedback as the teacher saw it
    first_turn = examples_of("test_codeio_output_prediction")[0]
    only = vocabulary.decode([int(i) for i, w in zip(first_turn["targets"], first_turn["loss_weights"]) if w])
    assert only == rows[first_turn["id"].decode()]["turn_1"] + "<|im_end|>"


def test_a_chat_template_folder_renders_the_chats_in_its_own_template(pipeline_run, tmp_path):
    """SmolLM2 (a Llama architecture that speaks ChatML): its exported folder's
    template and tokenizer, not the llama3 family's format."""
    from transformers import AutoTokenizer

    report, _ = pipeline_run
    rows = {row["id"]: row for row in map(json.loads, report.examples.read_text().splitlines())}
    folder = smollm2_tokenizer_folder(tmp_path / "smollm2")
    vocabulary = HFTokenizerVocabulary(str(folder))
    names = codeio.register_codeio_tasks(data_dir=report.work_dir / "tfrecords", vocabulary=vocabulary,
                                         family="llama3", prefix="folder_", chat_template=str(folder))
    try:  # (example, assistant turns its task keeps)
        examples = [(e, 2) for e in examples_of("folder_codeio_pp_revision")] + \
            [(e, 1) for e in examples_of("folder_codeio_output_prediction")]
    finally:
        for name in names:
            seqio.TaskRegistry.remove(name)
            seqio.MixtureRegistry.remove(name)
    reference = AutoTokenizer.from_pretrained(folder)

    def decode(ids):  # every id, <|im_end|> (this vocabulary's EOS) included
        return vocabulary.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    assert {min(rows[e["id"].decode()]["turns"], kept) for e, kept in examples} == {1, 2}
    for example, kept in examples:
        row = rows[example["id"].decode()]
        turns = min(row["turns"], kept)
        ids, weights = example["targets"], example["loss_weights"]
        assert decode(ids[weights == 1]) == "".join(row[f"turn_{t}"] + "<|im_end|>" for t in range(1, turns + 1))
        assert decode(ids) == reference.apply_chat_template(conversation(row, "llama3", turns), tokenize=False)
        assert "<|start_header_id|>" not in decode(ids)


def test_mixture_packs_through_the_chat_converter(pipeline_run):
    mixture = seqio.get_mixture_or_task("test_codeio_pp")
    dataset = seqio.get_dataset("test_codeio_pp", task_feature_lengths={"targets": 4096},
                                dataset_split="train", shuffle=False,
                                feature_converter=ChatLMFeatureConverter(pack=True))
    batches = list(dataset.as_numpy_iterator())
    assert mixture.tasks and batches
    for batch in batches:
        real = batch["decoder_segment_ids"] > 0
        assert batch["decoder_loss_weights"][~real].sum() == 0
        assert 0 < batch["decoder_loss_weights"].sum() < real.sum()


def test_training_input_reads_whole_epochs_each_a_new_order(pipeline_run):
    """Every example once an epoch, none twice: what seqio.get_dataset's repeat-then-
    shuffle does not give a task smaller than its shuffle buffer."""
    from codeio_jax.training.input import SeqioInput

    count = len(examples_of("test_codeio_output_prediction"))
    assert count >= 4
    rows = SeqioInput("test_codeio_output_prediction", length=8192, batch_size=1, pack=False)
    epochs = [[next(rows)["decoder_target_tokens"][0].tobytes() for _ in range(count)] for _ in range(2)]
    assert len(set(epochs[0])) == count and set(epochs[1]) == set(epochs[0])
    assert epochs[1] != epochs[0]  # reshuffled
    again = SeqioInput("test_codeio_output_prediction", length=8192, batch_size=1, pack=False)
    assert [next(again)["decoder_target_tokens"][0].tobytes() for _ in range(count)] == epochs[0]  # seeded


def test_training_input_refuses_a_task_no_example_fits_instead_of_waiting_forever(pipeline_run):
    from codeio_jax.training.input import SeqioInput

    fitting = SeqioInput("test_codeio_pp", length=8192, batch_size=1)
    assert next(fitting)["decoder_loss_weights"].sum() > 0
    too_short = SeqioInput("test_codeio_pp", length=64, batch_size=1)  # bytes: every chat is longer
    with pytest.raises(ValueError, match="of test_codeio_pp has no example of at most 64 tokens") as refused:
        next(too_short)
    assert "test_codeio_pp_single_turn" in str(refused.value) and "test_codeio_pp_revision" in str(refused.value)


def test_registration_fails_clearly_without_shards(tmp_path):
    with pytest.raises(FileNotFoundError, match="write stage"):
        codeio.register_codeio_tasks(data_dir=tmp_path, vocabulary=seqio.ByteVocabulary(), family="qwen2")


def test_gemma_folds_the_system_message_into_the_first_user_turn():
    from tasks.preprocessors import conversation

    chat = conversation({"system": "S", "prompt": "P", "turn_1": "A"}, "gemma2", 1)
    assert chat == [{"role": "user", "content": "S\n\nP"}, {"role": "assistant", "content": "A"}]
