"""One forward pass per distinct prompt when several completions of a batch share it.

A GRPO group is G completions of one prompt, and a DPO pair is two. The plain log-prob forward runs every row's
[prompt | completion] through the model, so each prompt is processed G times. Here each distinct prompt runs
once, with the KV cache kept. The cache is then repeated to the prompt's rows, and the completions run on top of
it. Autograd follows the repeat (index_select), so a prompt's gradient is the sum over its rows, as in the plain
pass. The log-probs are the same up to float summation order: 2.7e-5 max on SmolLM2-135M in fp32 (measured); the
tests hold the tiny model to 1e-5.

Saving: the prompt tokens of all but one row per prompt. SmolLM2-135M, 4 prompts of ~50 tokens x 8 completions of
64 tokens in one micro-batch: 3,648 -> 2,216 token positions; the policy forward+backward took 7.0-7.5 s instead
of 11.3-12.4 s (1 thread, in one process), and the GRPO step of benchmarks/grpo_step.py 15.2 s instead of 17.8 s
(2 threads); see docs/performance.md. The same idea is Prefix Grouper (arXiv:2506.05433) for GRPO.

The first completion token is predicted by the prompt's last position. So the prompt pass keeps one logit row,
and the completion pass feeds all completion tokens but the last (which predicts nothing).
"""
from __future__ import annotations

from typing import Any, Literal, Union

import torch

__all__ = ["ShareSetting", "distinct_prompts", "share_prompts_on", "shared_prompt_logits"]

ShareSetting = Union[bool, Literal["auto"]]


def share_prompts_on(model: Any, setting: ShareSetting) -> bool:
    """Whether a pass over `model` shares prompts: True/False as given; "auto" shares on the CPU only.

    On a CUDA GPU at benchmarks/grpo_step.py's size (32 rows of ~114 tokens, H200) the passes are launch-bound, and
    the shared path's second forward call, the host sync of `torch.unique` and the per-layer cache copy cost more
    than the prompt positions save: training passes 0.14-0.19 s/step unshared against 0.23-0.33 s shared (one run,
    alternating; whole step 1.55 vs 1.90 s). On the CPU the same change took 9.2 -> 6.6 s. With long prompts on a
    GPU (compute-bound passes) set it to true.
    """
    if setting == "auto":
        from rlvr.trainers.common import module_device
        return module_device(model).type == "cpu"
    return bool(setting)


def distinct_prompts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first row of each distinct prompt [U], row -> distinct prompt index [B]). Pad ids are ignored."""
    key = torch.cat([prompt_ids.masked_fill(~prompt_mask.bool(), 0), prompt_mask.long()], dim=1)
    _, inverse = torch.unique(key, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), key.shape[0], dtype=torch.long, device=key.device)
    first.scatter_reduce_(0, inverse, torch.arange(key.shape[0], device=key.device), reduce="amin")
    return first, inverse


def _unwrapped(model: Any) -> Any:
    """The HF model inside a wrapper that holds it as `.module` (DeepSpeed's engine), for attribute checks only;
    PEFT models forward attribute lookups themselves."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def shared_prompt_logits(model: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                         completion_ids: torch.Tensor, completion_seen: torch.Tensor) -> torch.Tensor | None:
    """Logits [B, C, V] whose row t predicts completion token t, or None when sharing does not apply.

    It does not apply when every prompt is distinct (nothing to save), or when the model is training with
    gradient checkpointing (HF turns the cache off there), or when the model returns no cache.
    Prompts are left-padded; `completion_seen` [B, C] marks the completion tokens the model attends to.
    Positions count real tokens only, as in the plain pass. Inputs move to the model's device.
    """
    from rlvr.trainers.common import module_device

    B, C = completion_ids.shape
    if B == 0 or C == 0:
        return None
    device = module_device(model)       # callers may pass CPU batches to a GPU model; the cache index must match
    prompt_ids, prompt_mask, completion_ids, completion_seen = (
        t.to(device) for t in (prompt_ids, prompt_mask, completion_ids, completion_seen))
    first, inverse = distinct_prompts(prompt_ids, prompt_mask)
    if len(first) == B:
        return None
    inner = _unwrapped(model)
    if inner.training and getattr(inner, "is_gradient_checkpointing", False):
        return None
    p_mask = prompt_mask.long()
    u_mask = p_mask[first]
    head = model(input_ids=prompt_ids[first], attention_mask=u_mask,
                 position_ids=(u_mask.cumsum(-1) - 1).clamp(min=0), logits_to_keep=1, use_cache=True)
    cache = getattr(head, "past_key_values", None)
    if cache is None or not hasattr(cache, "batch_select_indices"):
        return None
    first_logits = head.logits[:, -1:].index_select(0, inverse)            # [B, 1, V]: predicts token 0
    if C == 1:
        return first_logits
    cache.batch_select_indices(inverse)        # out-of-place per layer: the gradient flows back to each prompt
    attn = torch.cat([p_mask, completion_seen.long()], dim=1)[:, :-1]     # the last token is no input
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)[:, prompt_ids.shape[1]:]
    rest = model(input_ids=completion_ids[:, :-1], attention_mask=attn, position_ids=position_ids,
                 past_key_values=cache, use_cache=False)
    return torch.cat([first_logits, rest.logits], dim=1)
