"""Model helpers: the embedded tiny default model (`rlvr.models.tiny`)."""
from rlvr.models.tiny import build_tiny_model, build_tiny_tokenizer, default_model_dir

__all__ = ["build_tiny_model", "build_tiny_tokenizer", "default_model_dir"]
