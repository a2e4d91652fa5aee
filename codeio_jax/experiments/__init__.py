"""Experiments: runs that compare models trained on our data (arms, shared evaluation)."""
