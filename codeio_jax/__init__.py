"""codeio-jax: CodeI/O and CodeI/O++ in JAX."""

__version__ = "0.1.0"
