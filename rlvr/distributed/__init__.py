"""Scale-out: DeepSpeed ZeRO data parallelism and LoRA adapters behind one small seam every trainer calls.

- `context()`: rank / world size and the collectives trainers need (single-process default without a launcher);
- `prepare(model, optimizer, dist_cfg, grad_clip=...)`: a `Trainable` with backward / step / checkpoints,
  plain PyTorch or DeepSpeed ZeRO-1/2/3 from a JSON config (recipes/deepspeed/);
- `apply_lora`, `reference_model`, `merged_state_dict`, `save_model`, `sync_weights`: peft adapters.
See docs/scaling.md for launch commands, placement and memory estimates.
"""
from rlvr.distributed.config import DistributedConfig, LoRAConfig
from rlvr.distributed.context import DistContext, context, shard
from rlvr.distributed.lora import (apply_lora, is_peft, merged_state_dict, reference_model, save_model,
                                   sync_weights)
from rlvr.distributed.trainable import Trainable, prepare

__all__ = ["DistributedConfig", "LoRAConfig", "DistContext", "context", "shard", "Trainable", "prepare",
           "apply_lora", "is_peft", "merged_state_dict", "reference_model", "save_model", "sync_weights"]
