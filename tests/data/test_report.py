"""The quality report a pipeline run leaves in its work folder (data/report.py)."""

import json

from codeio_jax.data.ios import DEFAULT_CORPUS
from codeio_jax.data.pipeline import run_pipeline
from tests.conftest import shared_data


def test_the_report_counts_every_stage_and_shows_samples(tmp_path):
    rows = [json.loads(line) for line in DEFAULT_CORPUS.read_text().splitlines()[:12]]
    crux = json.loads(shared_data("cruxeval/cruxeval.jsonl").read_text().splitlines()[5])
    rows.append({**rows[1], "id": "contaminated", "refcode": crux["code"] + "\n\n" + rows[1]["refcode"]})
    rows.append({**rows[2], "id": "zz-copy"})
    rows.append({**rows[3], "id": "clock", "refcode": "import time\ndef main_solution(**kwargs):\n"
                                                      "    return int(time.time() * 1000)\n"})
    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    run_pipeline(work_dir=tmp_path / "run", source=source, workers=2, per_task=1, rounds=1)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    stages = {row["stage"]: row for row in report["stages"]}
    assert stages["ios"]["rows_in"] == 15 and stages["ios"]["reasons"] == {"non-deterministic": 1}
    assert stages["decontaminate"]["reasons"] == {"contaminated: cruxeval": 1}
    assert stages["dedup"]["reasons"] == {"duplicate (exact)": 1}
    assert report["records"] == {"records_in": 15, "non_deterministic": 1, "contaminated": 1, "duplicates": 1}
    tasks = report["tasks"]
    assert set(tasks) == {"input_prediction", "output_prediction"}
    for task in tasks.values():
        assert task["rows"] == 12 and task["first_pass_rate"] == 1.0 and task["revision_fix_rate"] is None
        assert task["first_reply_chars"]["p10"] <= task["first_reply_chars"]["p50"] <= task["first_reply_chars"]["max"]
    assert [len(samples) for samples in report["samples"].values()] == [10, 10]
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "| dedup | 13 | 12 | 1 |" in markdown and "## Samples: output_prediction" in markdown
    assert "non-deterministic: 1; contaminated: 1; duplicates: 1" in markdown
