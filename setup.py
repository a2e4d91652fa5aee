"""Package metadata for codeio-jax.

Every dependency is pinned: a research result is only as reproducible as the
environment that produced it. The core (sandbox, verification, scoring, the
stages and the local driver, the models and the trainer) needs numpy, tqdm,
gin-config and the JAX stack, imported lazily so `codeio-jax score` pays for none
of it; TensorFlow-based stacks are extras, which the GPU machines never need:
`seqio` (TFRecords as SeqIO tasks, vocabularies), `beam` (the Beam driver).
apache-beam needs protobuf below 7, and sentencepiece 0.2.3 needs 7: hence 0.2.1.
"""

from setuptools import find_packages, setup

setup(
    name="codeio-jax",
    version="0.1.0",
    description="CodeI/O and CodeI/O++ in JAX: execution-verified I/O-prediction data and training",
    python_requires=">=3.11",
    packages=find_packages(include=["codeio_jax", "codeio_jax.*", "tasks", "tasks.*"]),
    package_data={"codeio_jax": ["data/corpus/*.jsonl"]},
    install_requires=[
        "numpy==2.4.6",
        "tqdm==4.70.1",
        "gin-config==0.5.0",
        "google-crc32c==1.9.0",  # TFRecord checksums in C (a pure-Python fallback is 1000x slower)
        "datasketch==2.0.0",  # MinHash and LSH for deduplication (data/dedup.py)
        "scipy==1.17.1",  # datasketch's (and jax's) dependency, pinned
        # The models, the sampler and the trainer (imported only by the commands that use them).
        "jax==0.10.2",
        "flax==0.12.8",
        "optax==0.2.8",
        "orbax-checkpoint==0.12.8",
        "safetensors==0.8.0",
        "tokenizers==0.23.3",  # the sampler's chat models, the local teacher, `serve`
        "jinja2==3.1.6",  # a model folder's own chat template, rendered as transformers renders it
        "markupsafe==3.0.4",  # jinja2's dependency, pinned
        "gguf==0.19.0",  # `convert gguf-to-hf`: llama.cpp's files read and dequantised (pure Python)
        "matplotlib==3.11.2",  # the loss curve of a run's report
    ],
    extras_require={
        "test": [
            "pytest==9.2.0",
            "pytest-timeout==2.4.0",
            # `make test` runs the suite on two workers: much of it waits on compilers, sandboxes and
            # subprocesses one core at a time.
            "pytest-xdist==3.8.0",
            "execnet==2.1.2",  # pytest-xdist's dependency, pinned
            # The reference for chat templates and tokenizers (tested against, never imported by the package).
            "transformers==5.24.0",
            # Parity tests: transformers models with random weights. 2.13.0 is a CPU build on this
            # machine's index; another spec may pull gigabytes of CUDA wheels.
            "torch==2.13.0",
            "tensorboard==2.21.0",  # its own reader checks our event files
            "accelerate==1.16.0",  # transformers' own GGUF loading, the reference for `convert gguf-to-hf`
            "peft==0.21.2",  # loads our LoRA adapter export onto the transformers model (the reference)
        ],
        "seqio": [
            "tensorflow==2.21.0",
            "tensorflow-text==2.21.1",
            "tensorflow-datasets==4.9.10",
            "seqio==0.0.20",
            "sentencepiece==0.2.1",
            "importlib-resources==7.1.0",  # tensorflow-datasets imports it without requiring it
            "protobuf==6.33.6",
        ],
        "beam": [
            "apache-beam==2.77.0",
            "protobuf==6.33.6",
        ],
        # Compiling for Cloud TPU slices on any host (`codeio-jax train --compile_only --topology v5p-64`)
        # and running on TPU VMs: the TPU runtime built for this jax version (jax[tpu]==0.10.2 resolves it).
        "tpu": [
            "libtpu==0.0.42.1",
        ],
        # Modules that real-world CodeI/O programs import (see DESIGN.md, "The
        # execution environment"); install into the interpreter the sandbox runs.
        "science": [
            "scipy==1.17.1",
            "pandas==3.1.1",
            "scikit-learn==1.9.1",
            "sympy==1.14.0",
            "nltk==3.10.4",
        ],
    },
    entry_points={"console_scripts": ["codeio-jax=codeio_jax.cli:main"]},
)
