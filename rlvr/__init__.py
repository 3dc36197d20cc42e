"""rlvr: a small, clear verifiable-reward RL engine (GRPO-centred) for LLM post-training."""
__version__ = "0.1.0"
