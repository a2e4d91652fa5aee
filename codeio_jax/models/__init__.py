"""Flax decoder families (Llama 3, Qwen 2.5, Gemma 2, DeepSeek-V2) with Hugging Face checkpoints in and out."""
