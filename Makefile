# Each target sets up .venv first when it is missing, so a fresh clone needs only
# Python 3.11 and make.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,seqio,beam,tpu]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m codeio_jax.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python benchmarks/score_cruxeval.py
	$(BIN)/python benchmarks/score_startup.py
	$(BIN)/python benchmarks/ios_pairs.py
	$(BIN)/python benchmarks/hostile_corpus.py
	$(BIN)/python benchmarks/teacher_throughput.py
	$(BIN)/python benchmarks/pipeline_e2e.py
	$(BIN)/python benchmarks/pipeline_resume.py
	$(BIN)/python benchmarks/checkpoint_memory.py
	$(BIN)/python benchmarks/model_parity.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/input_pipeline.py
	$(BIN)/python benchmarks/train_resume.py
	$(BIN)/python benchmarks/sampling_cpu.py
	$(BIN)/python benchmarks/chunked_loss.py
	$(BIN)/python benchmarks/moe_step.py
	$(BIN)/python benchmarks/multihost_losses.py
	$(BIN)/python benchmarks/compile_paper_recipes.py --jobs 2 --cache benchmarks/results/compile_paper_recipes

clean:
	rm -rf $(VENV) build *.egg-info
