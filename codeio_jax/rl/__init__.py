"""Reinforcement learning with execution-verified rewards (GRPO).

    prompts.py            what the policy is asked: the pipeline's prompts or shards
    benchmark_prompts.py  CRUXEval's samples, in its format and scored by its rule
    toy.py                a generated family whose answers are known by construction
    rollout.py            G samples per prompt from our KV-cache sampler, as training rows
    rewards.py            the verifier's verdict by execution, plus configurable reward terms
    objective.py          group-normalised advantages, the clipped ratio objective, KL (k3)
    trainer.py            the loop: rollouts, rewards, updates on training/'s mesh and checkpoints
"""
