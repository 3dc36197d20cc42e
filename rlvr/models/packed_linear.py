"""Linear layers with bf16 weights pre-packed for oneDNN, for frozen models on CPU: the HF engine's bf16 sampling
copy and the reference model.

A plain bf16 `F.linear` on CPU lets oneDNN reorder the weight into its blocked layout on every call, which at RL
sizes costs about as much as the product itself; packing once (and again after each weight update) removes it.
This is the packing torch.compile's freezing pass does (`mkldnn._reorder_linear_weight` +
`mkldnn._linear_pointwise`), without compiling. Measured on SmolLM2-135M (docs/performance.md): one thread,
30 layers' linears at 32 rows 48-54 -> 33-36 ms per decode step, a reference forward of 16 x 114 tokens under
bf16 autocast 2.5-3.3 -> 1.6-2.2 s CPU; but a whole GRPO step on 2 threads gained nothing measurable and pays
~0.2 s to re-pack after each update, so it is opt-in (`HFEngine(pack_weights=True)`,
`reference_model(pack_bf16=True)`).

`PackedLinear` computes what bf16 autocast computes for `nn.Linear`: input cast to bf16, bf16 weight and bias,
bf16 output; bit-identical to it (tests). So it can stand in for the linears of an fp32 model that only ever runs
under autocast (the reference), and of a bf16 model (the sampling copy). The module keeps the original `weight`
and `bias` parameters (same state-dict keys; tied weights stay tied): after loading new weights call `repack`.
"""
from __future__ import annotations

import torch

__all__ = ["PackedLinear", "can_pack", "is_packed", "pack_linears", "repack"]


def can_pack(model: torch.nn.Module) -> bool:
    """Parameters on a CPU whose oneDNN has bf16 kernels (AVX-512 bf16 / AMX); elsewhere packing does not pay."""
    p = next(model.parameters(), None)
    return (p is not None and p.device.type == "cpu" and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class PackedLinear(torch.nn.Module):
    """Inference-only stand-in for `nn.Linear` computing in bf16 with a weight pre-packed for `rows_hint` rows."""

    def __init__(self, linear: torch.nn.Linear, rows_hint: int):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        self.in_features, self.out_features, self.rows_hint = linear.in_features, linear.out_features, rows_hint
        self.repack()

    def repack(self) -> None:
        w = self.weight.detach().to(torch.bfloat16)
        self._packed = torch.ops.mkldnn._reorder_linear_weight(w, self.rows_hint)
        self._bias = None if self.bias is None else self.bias.detach().to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.weight.requires_grad:
            raise RuntimeError("PackedLinear is inference-only: its packed weight does not track gradients")
        return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), self._packed, self._bias, "none", [], "")


def pack_linears(model: torch.nn.Module, rows_hint: int = 64) -> int:
    """Replace every `nn.Linear` of `model` by a `PackedLinear` in place; returns how many were replaced."""
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:
                setattr(parent, name, PackedLinear(child, rows_hint))
                n += 1
    return n


def is_packed(model: torch.nn.Module) -> bool:
    return any(isinstance(m, PackedLinear) for m in model.modules())


def repack(model: torch.nn.Module) -> None:
    """Re-pack after the weights changed (load_state_dict writes into the parameters, not the packed copies)."""
    for m in model.modules():
        if isinstance(m, PackedLinear):
            m.repack()
