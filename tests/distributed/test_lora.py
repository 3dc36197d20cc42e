"""LoRA via peft: trainable-parameter count, adapters-off reference, merged export, checkpoints, pipeline."""
from __future__ import annotations

import copy
import json

import pytest
import torch

pytest.importorskip("peft", reason="peft is not installed")

from rlvr.distributed import LoRAConfig, apply_lora, merged_state_dict, reference_model, save_model, sync_weights
from rlvr.trainers.common import completion_logprobs, load_model_and_tokenizer, pack


def tiny_lora(r: int = 4, **kw):
    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer("tiny")
    return apply_lora(model, LoRAConfig(enabled=True, r=r, alpha=8.0, **kw)), tok


def train_adapters(model, steps: int = 3) -> None:
    """A few Adam steps on the adapters so B != 0 (fresh adapters are an exact no-op)."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(4, 70, (2, 12), generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()


def sample_batch(tok):
    return pack([[5, 6, 7], [8, 9]], [[10, 11, 12, 13], [14, 15]], tok.pad_token_id)


def test_trainable_params_are_the_adapters_only():
    model, _ = tiny_lora(r=4)
    # Tiny Llama: 4 layers, hidden 128, MLP 384. all-linear adapts q,k,v,o (128->128), gate,up (128->384),
    # down (384->128); each adds r*(in+out): 4*(4*256 + 2*512 + 512) = 10,240 per layer, 40,960 in all.
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 40_960
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)


def test_target_modules_subset_and_bad_name():
    from rlvr.errors import ConfigError
    model, _ = tiny_lora(r=2, target_modules=["q_proj", "v_proj"])
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 4 * 2 * (2 * 256)
    with pytest.raises(ConfigError, match="lora.target_modules"):
        tiny_lora(target_modules=["no_such_proj"])


def test_reference_is_the_base_model_exactly():
    base, tok = load_model_and_tokenizer("tiny")
    model, _ = tiny_lora()
    batch = sample_batch(tok)
    with torch.no_grad():
        start, _ = completion_logprobs(model.eval(), batch)      # fresh adapters (B = 0): the base policy
    train_adapters(model)
    ref = reference_model(model)
    with torch.no_grad():
        got, _ = completion_logprobs(ref, batch)
        policy, _ = completion_logprobs(model.eval(), batch)
        separate, _ = completion_logprobs(base.eval(), batch)
    assert torch.equal(got, start)                      # adapters off = the starting policy, bit for bit
    # An independently loaded copy agrees to float rounding (BLAS results depend on memory alignment).
    torch.testing.assert_close(got, separate, rtol=0, atol=1e-6)
    assert (policy - start).abs().max() > 1e-4          # while the policy itself has moved
    model.train()
    completion_logprobs(ref, batch)
    assert model.training                               # the reference call leaves the policy's mode alone


def test_merged_state_dict_equals_peft_merge_and_unload():
    model, _ = tiny_lora()
    train_adapters(model)
    ours = merged_state_dict(model)
    theirs = copy.deepcopy(model).merge_and_unload().state_dict()
    assert sorted(ours) == sorted(theirs)
    for k in theirs:
        torch.testing.assert_close(ours[k], theirs[k], rtol=0, atol=1e-6)
    assert any(".lora_" in n for n, _ in model.named_parameters())   # training copy untouched


def test_sync_weights_sends_merged_weights_to_a_separate_engine_model():
    from rlvr.rollout.hf import HFEngine
    model, tok = tiny_lora()
    train_adapters(model)
    other, _ = load_model_and_tokenizer("tiny")
    engine = HFEngine(other, tok)
    sync_weights(engine, model)
    batch = sample_batch(tok)
    with torch.no_grad():
        a, _ = completion_logprobs(other.eval(), batch)
        b, _ = completion_logprobs(model.eval(), batch)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    shared = HFEngine(model, tok)
    sync_weights(shared, model)                          # the engine shares the peft module: nothing to send


def test_save_model_and_checkpoint_roundtrip(tmp_path):
    from transformers import AutoModelForCausalLM

    from rlvr.trainers.checkpoint import CheckpointManager
    model, tok = tiny_lora()
    train_adapters(model)
    save_model(model, tmp_path / "out", tokenizer=tok)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")        # a plain HF model, merged
    merged = merged_state_dict(model)
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, merged[k], rtol=0, atol=0)
    assert (tmp_path / "out" / "adapter").is_dir()

    ckpts = CheckpointManager(tmp_path / "run")
    ckpts.save(3, model, state={"x": 1})
    fresh, _ = tiny_lora()
    fresh_sd = {k: v.clone() for k, v in fresh.state_dict().items()}
    ckpts.restore(ckpts.latest(), fresh)
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    assert any(not torch.equal(fresh_sd[k], v) for k, v in model.state_dict().items())


def test_pipeline_with_lora_saves_merged_stage_models(tmp_path):
    from transformers import AutoModelForCausalLM

    from rlvr.cli import main
    args = ["train", "recipes/r1_mini.yaml", f"output_dir={tmp_path}", "model.path=tiny", "torch_threads=1",
            "sft.torch_threads=1",
            "lora.enabled=true", "lora.r=4", "sft.max_steps=2", "sft.batch_size=4", "sft.eval_every=0",
            "sft.stop_at_pass1=null", "sft.examples=8", "sft.lr=1e-2", "grpo.steps=1", "grpo.prompts_per_step=2",
            "grpo.group_size=2", "grpo.max_new_tokens=4", "grpo.eval_every=0", "grpo.beta=0.1",
            "grpo.max_sampling_rounds=1", "grpo.dynamic_sampling=false", "task.eval_limit=2", "eval.n=2",
            "eval.ks=[1,2]", "eval.max_new_tokens=4", "control.enabled=false"]
    assert main(args) == 0
    base, _ = load_model_and_tokenizer("tiny")
    sft = AutoModelForCausalLM.from_pretrained(tmp_path / "sft" / "model")
    assert (tmp_path / "sft" / "model" / "adapter").is_dir()
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(sft.state_dict()[q], base.state_dict()[q])                  # adapters merged in
    emb = "model.embed_tokens.weight"
    assert torch.equal(sft.state_dict()[emb], base.state_dict()[emb])                  # not adapted: unchanged
    assert json.loads((tmp_path / "summary.json").read_text())["stages"][-1]["steps"] == 1


def test_ppo_lora_critic_has_its_own_adapters_on_the_base_trunk():
    from rlvr.models.critic import ActorCritic, build_critic

    base, tok = load_model_and_tokenizer("tiny")
    model, _ = tiny_lora()
    train_adapters(model)
    critic = build_critic(model, "separate")
    ac = ActorCritic(model, critic)
    assert not ac.shared and critic.meta["lora"] is True
    # Its own adapters (same LoRA settings: 40,960 as for the policy) + the head (H + 1 = 129); the base frozen.
    assert sum(p.numel() for p in critic.parameters() if p.requires_grad) == 40_960 + 129
    assert not {id(p) for p in critic.parameters()} & {id(p) for p in model.parameters()}
    # The critic's trunk is the *base* trunk: the policy's trained adapters are not in it.
    plain = {k.replace(".base_layer.", "."): v for k, v in critic.backbone.state_dict().items() if "lora_" not in k}
    for k, v in base.model.state_dict().items():
        assert torch.equal(plain[k], v), k
    batch = sample_batch(tok)
    from rlvr.models.critic import completion_values
    with torch.no_grad():
        v0 = completion_values(critic, batch)
        with model.disable_adapter():                   # the reference view leaves the critic alone
            assert torch.equal(completion_values(critic, batch), v0)
    torch.nn.init.normal_(critic.head.weight)           # (a fresh head is 0: no gradient reaches the trunk yet)
    completion_values(critic, batch).sum().backward()
    assert all(p.grad is None for p in model.parameters())                     # the value loss stays in the critic
    assert any(p.grad.abs().max() > 0 for n, p in critic.named_parameters() if "lora_B" in n)
    assert all(p.grad is None for n, p in critic.named_parameters() if "lora_" not in n and "head" not in n)
    shared = build_critic(model, "shared")
    assert shared.backbone is model.get_base_model().model      # the policy's adapted trunk


def test_ppo_with_lora_trains_adapters_and_resumes(tmp_path):
    """2 PPO steps with LoRA (KL to the adapters-off reference; an entropy bonus, since the tiny model scores 0
    here): base weights stay, the policy's adapters move; 1 step + resume (policy adapters and critic back from
    the checkpoint) = 2 straight steps."""
    from rlvr.rollout import get_engine
    from rlvr.trainers.ppo import PPOConfig, train_ppo
    from tasks.registry import get_task

    task = get_task("arithmetic", digits=1, ops="+", reverse_answer=True, answer_format="plain", n_test=5,
                    n_train=20)

    def run(out, steps, resume=False):
        model, tok = tiny_lora()
        cfg = PPOConfig(steps=steps, prompts_per_step=4, samples_per_prompt=2, max_new_tokens=4, ppo_epochs=2,
                        micro_batch=4, lr=1e-2, critic_lr=1e-2, kl_coef=0.05, entropy_coef=0.1, bf16=False,
                        eval_every=0, checkpoint_every=1)
        train_ppo(model, tok, get_engine("hf", model=model, tokenizer=tok), task, task.load("train"), cfg,
                  out_dir=out, resume=resume, log_fn=lambda s: None)
        return model

    straight = run(tmp_path / "a", 2)
    base, _ = load_model_and_tokenizer("tiny")
    sd = straight.get_base_model().state_dict()
    q = "model.layers.0.self_attn.q_proj"
    assert torch.equal(sd[f"{q}.base_layer.weight"], base.state_dict()[f"{q}.weight"])     # base frozen
    assert sd[f"{q}.lora_B.default.weight"].abs().max() > 0                                 # adapters trained
    ckpt = tmp_path / "a" / "checkpoints" / "step-00000002" / "model"
    assert (ckpt / "adapter").is_dir() and (ckpt / "critic.safetensors").exists()
    from safetensors.torch import load_file
    critic_sd = load_file(str(ckpt / "critic.safetensors"))
    assert any("lora_A" in k for k in critic_sd) and critic_sd["critic.head.bias"].abs().max() > 0
    run(tmp_path / "b", 1)
    resumed = run(tmp_path / "b", 2, resume=True)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k
    assert torch.equal(load_file(str(tmp_path / "b" / "checkpoints" / "step-00000002" / "model" /
                                     "critic.safetensors"))["critic.head.bias"], critic_sd["critic.head.bias"])
