"""Package metadata for codeio-jax.

Every dependency is pinned: a research result is only as reproducible as the
environment that produced it. Heavy stacks (JAX, TensorFlow, SeqIO) join the pins
when the modules that use them land; the sandbox, verification and scoring need
nothing beyond numpy and tqdm.
"""

from setuptools import find_packages, setup

setup(
    name="codeio-jax",
    version="0.1.0",
    description="CodeI/O and CodeI/O++ in JAX: execution-verified I/O-prediction data and training",
    python_requires=">=3.11",
    packages=find_packages(include=["codeio_jax", "codeio_jax.*"]),
    package_data={"codeio_jax": ["data/corpus/*.jsonl"]},
    install_requires=[
        "numpy==2.4.6",
        "tqdm==4.70.1",
    ],
    extras_require={
        "test": [
            "pytest==9.2.0",
            "pytest-timeout==2.4.0",
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
