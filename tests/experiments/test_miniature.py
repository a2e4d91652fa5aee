"""The miniature experiment (codeio_jax/experiments/miniature.py): the split is by
record id; the ablation's replies are the CodeI/O answers without their reasoning;
and the whole run, on a tiny random model with SmolLM2's tokenizer and chat
template, gives one row per arm with the examples and tokens each trained on."""

import json
import shutil

import pytest

from codeio_jax.data.ios import DEFAULT_CORPUS
from codeio_jax.experiments import miniature
from codeio_jax.verify.extract import extract_answer


def corpus_lines(count):
    return DEFAULT_CORPUS.read_text(encoding="utf-8").splitlines()[:count]


def test_the_split_is_by_record_id_stable_and_complete(tmp_path):
    source = tmp_path / "records.jsonl"
    lines = corpus_lines(40)
    source.write_text("\n".join(lines) + "\n")
    train, held = miniature.split_records(source, 0.25, 0, tmp_path / "a")
    ids = {side: [json.loads(line)["id"] for line in path.read_text().splitlines()] for side, path in
           (("train", train), ("held", held))}
    assert sorted(ids["train"] + ids["held"]) == sorted(json.loads(line)["id"] for line in lines)
    assert 3 <= len(ids["held"]) <= 17  # about a quarter of 40
    # The same seed splits the same way whatever the order of the records; another seed another way.
    source.write_text("\n".join(reversed(lines)) + "\n")
    _, again = miniature.split_records(source, 0.25, 0, tmp_path / "b")
    assert sorted(json.loads(line)["id"] for line in again.read_text().splitlines()) == sorted(ids["held"])
    _, other = miniature.split_records(source, 0.25, 1, tmp_path / "c")
    assert sorted(json.loads(line)["id"] for line in other.read_text().splitlines()) != sorted(ids["held"])


def test_a_split_that_leaves_a_side_empty_is_refused(tmp_path):
    source = tmp_path / "one.jsonl"
    source.write_text(corpus_lines(1)[0] + "\n")
    with pytest.raises(ValueError, match="the split left"):
        miniature.split_records(source, 0.5, 0, tmp_path / "out")
    source.write_text("{\"code\": 1}\n")
    with pytest.raises(ValueError, match="not a record with an id"):
        miniature.split_records(source, 0.5, 0, tmp_path / "out")


def test_the_ablation_keeps_each_answer_and_drops_the_reasoning(tmp_path):
    from codeio_jax.data.pipeline import TraceTeacherSpec, run_pipeline

    source = tmp_path / "records.jsonl"
    source.write_text("\n".join(corpus_lines(4)) + "\n")
    report = run_pipeline(work_dir=tmp_path / "work", source=source, rounds=0, per_task=1,
                          turn_teachers=[TraceTeacherSpec()])
    originals = [json.loads(line) for line in report.examples.read_text().splitlines()]
    kept = miniature.without_chain_of_thought(report.examples, tmp_path / "no_cot.jsonl")
    ablated = [json.loads(line) for line in (tmp_path / "no_cot.jsonl").read_text().splitlines()]
    assert kept == len(ablated) == len(originals) >= 6
    for before, after in zip(originals, ablated):
        key = miniature.ANSWER_KEYS[before["task"]]
        assert after["prompt"] == before["prompt"] and after["id"] == before["id"]
        assert extract_answer(after["turn_1"], key).value == extract_answer(before["turn_1"], key).value
        assert after["turn_1"].startswith("```json\n{") and after["turn_1"].count("\n") == 2
        assert len(after["turn_1"]) < len(before["turn_1"]) / 3


@pytest.mark.slow
def test_the_experiment_gives_a_row_per_arm(tmp_path):
    """Four arms end to end on a tiny random Llama that speaks SmolLM2's vocabulary
    and chat template (its answers are noise; the machinery is what is checked)."""
    pytest.importorskip("torch")
    import torch
    import transformers as tr

    from tests.models.gguf_files import smollm2_tokenizer_folder

    folder = smollm2_tokenizer_folder(tmp_path / "model")
    torch.manual_seed(0)
    config = tr.LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                            tie_word_embeddings=True)
    tr.LlamaForCausalLM(config).save_pretrained(folder)
    source = tmp_path / "records.jsonl"
    source.write_text("\n".join(corpus_lines(8)) + "\n")
    lines = []
    results = miniature.run_miniature(work_dir=tmp_path / "run", base_model=folder, source=source,
                                      held_out_fraction=0.3, cruxeval_limit=2, train_steps=2, length=2048,
                                      answer_new_tokens=8, eval_new_tokens=8, on_line=lines.append)
    assert [r.arm for r in results] == list(miniature.ARMS)
    rows = {r.arm: r for r in results}
    assert rows["base"].examples == 0 and rows["base"].final_loss is None
    for arm in ("codeio", "codeio_pp", "codeio_no_cot"):
        assert rows[arm].examples > 0 and rows[arm].loss_tokens > 0 and rows[arm].final_loss is not None
    # The ablation trains on the same prompts with the answers alone: far fewer loss tokens.
    assert rows["codeio_no_cot"].examples == rows["codeio"].examples
    assert rows["codeio_no_cot"].loss_tokens < rows["codeio"].loss_tokens / 3
    # CodeI/O++: the random model's first turns are wrong and revised, so its chats are longer.
    assert rows["codeio_pp"].tokens > rows["codeio"].tokens
    for r in results:
        assert set(r.cruxeval) == {"CRUXEval-O", "CRUXEval-I"}
        assert set(r.held_out) == {"held-out output", "held-out input"}
    table = (tmp_path / "run" / "table.md").read_text()
    assert all(f"| {arm} |" in table for arm in miniature.ARMS)
    assert json.loads((tmp_path / "run" / "results.json").read_text())[1]["arm"] == "codeio"
    assert any(line.startswith("records: ") for line in lines)
    # The held-out records were never trained on: no training example comes from one.
    held = {json.loads(line)["id"] for line in (tmp_path / "run" / "split" / "held_out.jsonl").read_text().splitlines()}
    for data in ("data_codeio", "data_codeio_pp"):
        trained = {json.loads(line)["record_id"] for line in
                   (tmp_path / "run" / data / "examples.jsonl").read_text().splitlines()}
        assert trained and not trained & held
    shutil.rmtree(tmp_path / "run")
