"""Teachers: one protocol, a conversation in, a reply out, in batches."""

from codeio_jax.teachers.base import Message, Reply, Teacher, Usage

__all__ = ["Message", "Reply", "Teacher", "Usage"]
