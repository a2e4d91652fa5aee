"""CRUXEval as TFDS and SeqIO eval tasks whose metric runs the answers."""

import pytest

from codeio_jax.verify import cruxeval_prompts
from tests.conftest import shared_data

tf = pytest.importorskip("tensorflow")
seqio = pytest.importorskip("seqio")

from tasks import cruxeval as tasks_cruxeval  # noqa: E402


def test_generation_from_reply_splits_the_assertion_where_python_does():
    reply = "Step 1 ... so\n[ANSWER]assert f('a==b', [1]) == ['==', 2][/ANSWER]"
    assert cruxeval_prompts.generation_from_reply("output", reply) == "['==', 2]"
    assert cruxeval_prompts.generation_from_reply("input", reply) == "f('a==b', [1])"
    assert cruxeval_prompts.generation_from_reply("output", "x\nassert f(1) == 2\nthat's it") == "2"
    assert cruxeval_prompts.generation_from_reply("output", "no idea") == "no idea"
    with pytest.raises(ValueError):
        cruxeval_prompts.messages("both", "def f(): pass", "", "")


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    source = shared_data("cruxeval/cruxeval.jsonl")
    names = tasks_cruxeval.register_cruxeval_tasks(
        data_dir=tmp_path_factory.mktemp("tfds"), vocabulary=seqio.ByteVocabulary(), family="qwen2",
        source_path=source, sandbox_workers=2)
    yield source
    for name in names:
        seqio.TaskRegistry.remove(name)


def test_tasks_prompt_in_the_chat_template_and_score_by_execution(registered):
    samples = tasks_cruxeval.cruxeval.load_samples(registered)
    for mode in ("output", "input"):
        task = seqio.get_mixture_or_task(f"cruxeval_{mode}")
        rows = list(task.get_dataset(sequence_length=None, split="test", shuffle=False).as_numpy_iterator())
        assert len(rows) == 800
        row = rows[0]
        sample = samples[row["id"].decode()]
        text = row["inputs_pretokenized"].decode()
        assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
        assert sample.code.strip() in text
        truth = sample.output if mode == "output" else f"f({sample.input})"
        assert row["targets_pretokenized"].decode() == truth
        # Postprocess and metric, the way seqio's evaluator calls them, on 40 samples:
        # true answers score 100, answers that repeat the question score 0.
        picked = rows[:40]
        targets = [task.postprocess_fn(r["targets_pretokenized"].decode(), example=r, is_target=True)
                   for r in picked]
        right = [task.postprocess_fn(f"[ANSWER]assert f({samples[t].input}) == {samples[t].output}[/ANSWER]",
                                     is_target=False) for t in targets]
        wrong = [task.postprocess_fn("[ANSWER]assert f(0) == None[/ANSWER]", is_target=False) for _ in targets]
        [metric] = task.metric_fns
        assert metric(targets, right) == {"pass@1": 100.0}
        assert metric(targets, wrong)["pass@1"] < 10.0

