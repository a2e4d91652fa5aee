"""Workers need only the installed package: a wheel of it, installed apart from
the source tree, runs the Beam pipeline in worker processes that cannot see the
checkout, and writes the source tree's bytes."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from codeio_jax.data.ios import DEFAULT_CORPUS
from codeio_jax.data.pipeline import run_pipeline
from tests.conftest import shared_data
from tests.data.test_beam_pipeline import corpus_lines, shard_files

ROOT = Path(__file__).resolve().parents[2]


def installed_package(tmp_path):
    """The package as a worker gets it (`--setup_file` or the worker image): a
    wheel built from a copy of the tree, installed into a folder of its own."""
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(ROOT / "setup.py", tree)
    for package in ("codeio_jax", "tasks"):
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(tree),
                    "-w", str(tmp_path / "wheel")], check=True, cwd=tree)
    (wheel,) = (tmp_path / "wheel").glob("codeio_jax-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True)
    return site


@pytest.mark.slow
def test_an_installed_wheel_runs_the_pipeline_on_worker_processes(tmp_path):
    site = installed_package(tmp_path)
    assert (site / "codeio_jax" / "data" / "corpus" / DEFAULT_CORPUS.name).exists()  # the package's data
    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(corpus_lines(6)))
    crux = str(shared_data("cruxeval/cruxeval.jsonl"))  # not in the package: the launcher ships its index
    settings = dict(per_task=1, rounds=1, decontaminate_against=[crux])
    run_pipeline(work_dir=tmp_path / "local", source=source, workers=2, **settings)
    launcher = textwrap.dedent(f"""
        import json, codeio_jax
        from codeio_jax.data.beam_pipeline import run_beam_pipeline
        counts = run_beam_pipeline({str(source)!r}, {str(tmp_path / "beam")!r}, beam_args=[
            "--direct_running_mode=multi_processing", "--direct_num_workers=2"], **{settings!r})
        print(json.dumps({{"package": codeio_jax.__file__, **counts}}))
    """)
    work = tmp_path / "elsewhere"  # no checkout on sys.path: not the cwd, not PYTHONPATH
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", launcher], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["package"].startswith(str(site))
    assert found["records"] == 6 and found["examples"] == 6 * 2
    assert shard_files(tmp_path / "beam") == shard_files(tmp_path / "local")
