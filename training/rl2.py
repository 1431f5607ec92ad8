"""`icl-rl rl2` / `accelerate launch -m training.rl2`: meta-RL by plain RL (RL², Duan et al. 2016).

A memory policy trained by PPO across a distribution of tasks, never shown a learning
algorithm. Its input at step t is exactly AD's (o_t, a_{t-1}, r_{t-1}, episode start;
`icl_rl.transitions`). A *trial* is one task for `trial_episodes` episodes: the memory is kept
across the trial's episodes and starts empty at the next trial, and the return is the whole
trial's discounted reward (GAE never cuts at an episode end, only at the trial's), so what the
policy explores early pays later in the same trial.

One iteration: every process samples `num_envs` training tasks (its own seed stream), rolls the
policy out for a trial through the acting interface every evaluation uses (`ModelAgent`),
recomputes log-probabilities and values over the whole trial with one training forward (the
trial starts from an empty memory, so this is the same computation), and runs `epochs` passes
of clipped-PPO minibatches over tasks; accelerate averages the gradients across processes.
The saved model is a registered family (`gru` with a value head) that `icl-rl eval` evaluates
like any other; the finite-task split it trained on goes into its provenance, so eval holds out
the same tasks.

Ingredient switches, named as AD's: `--hide-inputs` (reward, action, ...), `--memory`
(history: the whole trial; episode: reset at every episode; none: a feedforward policy) and
`--train-tasks K` (train on K tasks only).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from icl_rl.config import (
    follows_progress,
    parse_config,
    parse_kwargs,
    require_positive,
)
from icl_rl.envs import Env, make_env
from icl_rl.errors import IclRlError
from icl_rl.models import FAMILIES, FamilyModel, build_model, check_env, family_config
from icl_rl.models.recurrent import MEMORIES
from icl_rl.policy import ModelAgent
from icl_rl.rollout import rollout
from icl_rl.tasks import card_split, training_pool
from icl_rl.transitions import check_parts, sequences
from training.config import RL2Config

log = logging.getLogger(__name__)


def validate(config: RL2Config) -> Env:
    """Check every setting before anything heavy runs; returns the env."""
    config.check_run_options()
    require_positive(config, "trial_episodes", "num_envs", "iterations", "epochs",
                     "minibatches")
    require_positive(config, "train_tasks", optional=True)
    if config.memory not in MEMORIES:
        raise IclRlError(f"--memory must be one of {', '.join(MEMORIES)}, got {config.memory!r}")
    check_parts(config.hide_inputs)
    if config.model not in FAMILIES:
        raise IclRlError(f"--model {config.model!r}: unknown model family; choose one of: "
                         f"{', '.join(sorted(FAMILIES))}")
    if "value_head" not in FAMILIES[config.model][0].options():
        raise IclRlError(f"--model {config.model}: rl2 needs a family with a value head; use "
                         "--model gru or ad")
    family_config(config.model, config.model_options())
    if config.minibatches > config.num_envs:
        raise IclRlError(f"--minibatches {config.minibatches} is more than --num-envs "
                         f"{config.num_envs}: a minibatch holds whole trials")
    for name in ("gamma", "gae_lambda"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise IclRlError(f"--{name.replace('_', '-')} must be in [0, 1]")
    if not (config.lr > 0 and config.clip > 0 and config.entropy_coef >= 0
            and config.value_coef >= 0 and config.max_grad_norm >= 0):
        raise IclRlError("need --lr > 0, --clip > 0 and --entropy-coef, --value-coef, "
                         "--max-grad-norm >= 0")
    if not 0.0 <= config.heldout_fraction < 1.0:
        raise IclRlError(f"--heldout-fraction must be in [0, 1), got {config.heldout_fraction}")
    env = make_env(config.env, **parse_kwargs(config.env_kwargs, "--env-kwargs"))
    if config.memory == "episode" and not env.is_episodic:
        log.warning("--memory episode on %s: an episode is one step, so this is --memory none",
                    config.env)
    if env.has_finite_tasks:
        card_split(env, config.seed, config.heldout_fraction, config.train_tasks)  # K fits
    return env


def env_meta(env: Env) -> dict:
    """The env as a dataset card describes it (what `build_model` and `check_env` read)."""
    return {"name": env.spec.name, "params": env.params(),
            "spec": json.loads(json.dumps(dataclasses.asdict(env.spec)))}


class TaskSampler:
    """Training tasks of one process: the split's training part (or its K-task pool)."""

    def __init__(self, env: Env, config: RL2Config) -> None:
        self.env = env
        self.pool = training_pool(env, config.seed, config.heldout_fraction, config.train_tasks)
        self.split = (card_split(env, config.seed, config.heldout_fraction, config.train_tasks)
                      if env.has_finite_tasks else None)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """n tasks [n, task_dim]: drawn from the pool if there is one, else from the env."""
        if self.pool is None:
            return self.env.sample_tasks(n, generator)
        return self.pool[torch.randint(len(self.pool), (n,), generator=generator)]


def generators(seed: int, rank: int, iteration: int) -> list[torch.Generator]:
    """(task, env, agent, minibatch order) generators of one iteration of one process: a pure
    function of its arguments, so a resumed run draws what an uninterrupted one would."""
    states = np.random.SeedSequence([seed, rank, iteration]).generate_state(4, dtype=np.uint64)
    return [torch.Generator().manual_seed(int(s)) for s in states]


def returns_to_go(rewards: Tensor, gamma: float) -> Tensor:
    """Discounted reward-to-go [N, T] of whole trials (the trial's end is terminal)."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        out[:, t] = running
    return out


def gae(rewards: Tensor, values: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Advantages and returns [N, T] of whole trials: the trial's end is terminal (value 0),
    an episode's end inside it is not cut."""
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    t_max = rewards.shape[1]
    for t in reversed(range(t_max)):
        next_value = values[:, t + 1] if t + 1 < t_max else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        adv[:, t] = last
    return adv, adv + values


def ppo_loss(model, batch: dict, config: RL2Config) -> tuple[Tensor, dict]:
    """Clipped PPO objective + value loss - entropy bonus over whole trials [B, T]."""
    out = model(**batch["inputs"])
    logp_all = torch.log_softmax(out.logits.float(), dim=-1)
    logp = logp_all.gather(-1, batch["actions"][..., None])[..., 0]
    entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
    adv = batch["advantages"]
    if config.normalize_advantages:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    ratio = (logp - batch["logp"]).exp()
    policy_loss = -torch.min(ratio * adv, ratio.clamp(1 - config.clip, 1 + config.clip)
                             * adv).mean()
    value_loss = 0.5 * (out.values.float() - batch["returns"]).pow(2).mean()  # the residual
    loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy
    with torch.no_grad():
        stats = {"losses/policy": policy_loss.detach(), "losses/value": value_loss.detach(),
                 "losses/entropy": entropy.detach(),
                 "losses/clip_fraction": ((ratio - 1).abs() > config.clip).float().mean(),
                 "losses/approx_kl": ((ratio - 1) - (logp - batch["logp"])).mean()}
    return loss, stats


class BehaviourAgent(ModelAgent):
    """The acting interface, keeping each step's logits and top-layer hidden state: the
    behaviour policy's log-probabilities and the values come from the steps that acted, with
    no second forward over the trials."""

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        super().reset(n, generator)
        self.logits: list[Tensor] = []
        self.hidden: list[Tensor] = []

    def act(self, obs: Tensor) -> Tensor:
        action = super().act(obs)
        self.logits.append(self.last_logits)
        self.hidden.append(self.last_hidden)
        return action


def collect(model: FamilyModel, env: Env, sampler: TaskSampler, config: RL2Config,
            gens: list[torch.Generator], device) -> dict:
    """One batch of trials through the acting interface, with the PPO targets."""
    task_gen, env_gen, agent_gen, _ = gens
    steps = config.trial_episodes * env.spec.episode_len
    tasks = sampler.sample(config.num_envs, task_gen)
    agent = BehaviourAgent(model)
    h = rollout(env, agent, tasks, steps, env_generator=env_gen,
                agent_generator=agent_gen, record_optimal=False)
    model.train()  # ModelAgent puts the model in eval mode to act
    inputs = {k: v.to(device) for k, v in
              sequences(h.observations, h.actions, h.rewards, h.dones).as_dict().items()}
    actions, rewards = h.actions.to(device), h.rewards.to(device)
    # The critic is V_t = b_t + v(h_t): b_t, the batch's mean reward-to-go at step t, carries
    # the return's dependence on the time left in the trial (0 to ~1/(1 - gamma) times the
    # reward), which a memory of the inputs would have to count out; the value head learns the
    # rest (what the history says about this task). b_t is a training device only.
    baseline = returns_to_go(rewards, config.gamma).mean(0, keepdim=True)  # [1, T]
    with torch.no_grad():  # the recurrent family's steps equal its training forward exactly
        logits = torch.stack(agent.logits, dim=1).to(device)  # [N, T, A]
        logp = torch.log_softmax(logits.float(), -1).gather(-1, actions[..., None])[..., 0]
        hidden = torch.stack(agent.hidden, dim=1).to(device)  # [N, T, d]
        values = model.value_head(hidden)[..., 0].float() + baseline
    advantages, returns = gae(rewards, values, config.gamma, config.gae_lambda)
    episodes = h.episode_returns()  # [N, E]
    return {"inputs": inputs, "actions": actions, "logp": logp, "advantages": advantages,
            "returns": returns - baseline, "episode_returns": episodes,
            "steps": h.num_steps * len(tasks)}


def minibatches(batch: dict, n: int, generator: torch.Generator):
    """`n` minibatches of whole trials, in a random order."""
    order = torch.randperm(batch["actions"].shape[0], generator=generator)
    for idx in order.chunk(n):
        idx = idx.to(batch["actions"].device)
        yield {"inputs": {k: v[idx] for k, v in batch["inputs"].items()},
               **{k: batch[k][idx] for k in ("actions", "logp", "advantages", "returns")}}


def save_model(config: RL2Config, out: Path, accelerator, model, sampler: TaskSampler,
               iteration: int, env_steps: int, metrics: list[dict]) -> Path:
    """Write model/ atomically: weights, config with provenance (the task split), card."""
    import os
    import shutil

    from icl_rl.config import save_config
    from icl_rl.model_card import write_model_card

    model_dir = out / "model"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = out / ".tmp-model"
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.config.provenance = {
            "trainer": "rl2", "iterations": iteration, "env_steps": env_steps,
            "trial_episodes": config.trial_episodes, "train_tasks": config.train_tasks,
            "learner": None, **({"task_split": sampler.split} if sampler.split else {})}
        unwrapped.save_pretrained(tmp)
        save_config(config, tmp / "train_config.json")
        write_model_card(tmp, unwrapped.config, dataclasses.asdict(config), metrics, iteration)
        shutil.rmtree(model_dir, ignore_errors=True)
        os.replace(tmp, model_dir)
    accelerator.wait_for_everyone()
    return model_dir


def train_loop(config: RL2Config, out: Path, accelerator, model, optimizer, scheduler, env: Env,
               sampler: TaskSampler, iteration: int, record) -> int:
    """PPO iterations from `iteration` to --iterations: collect, update, log, checkpoint.
    Logged rows average the iterations since the last one (the losses: each iteration's last
    minibatch), over processes."""
    from training.train import save_checkpoint

    rank, world = accelerator.process_index, accelerator.num_processes
    unwrapped = accelerator.unwrap_model(model)
    bar = tqdm(total=config.iterations, initial=iteration, desc="rl2", unit="it",
               disable=not (config.progress and accelerator.is_local_main_process))
    t_last, steps_since, rows = time.perf_counter(), 0, []
    while iteration < config.iterations:
        gens = generators(config.seed, rank, iteration)
        batch = collect(unwrapped, env, sampler, config, gens, accelerator.device)
        for _ in range(config.epochs):
            for mb in minibatches(batch, config.minibatches, gens[3]):
                loss, stats = ppo_loss(model, mb, config)
                accelerator.backward(loss)
                if config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
        scheduler.step()
        iteration += 1
        steps_since += batch["steps"] * world
        episodes = batch["episode_returns"]
        rows.append(torch.stack([episodes.sum(1).mean(), episodes[:, 0].mean(),
                                 episodes[:, -1].mean(), *stats.values()]))
        bar.update(1)
        if iteration % config.log_every == 0 or iteration == config.iterations:
            mean = accelerator.reduce(torch.stack(rows).mean(0).to(accelerator.device), "mean")
            dt = time.perf_counter() - t_last
            names = ["train/trial_return", "train/first_episode_return",
                     "train/last_episode_return", *stats]
            row = {"step": iteration, **{k: float(v) for k, v in zip(names, mean, strict=True)},
                   "train/lr": scheduler.get_last_lr()[0],
                   "train/env_steps": iteration * batch["steps"] * world,
                   "train/env_steps_per_s": steps_since / dt}
            record(row)
            bar.set_postfix(trial=f"{row['train/trial_return']:.2f}")
            rows, t_last, steps_since = [], time.perf_counter(), 0
        if (config.save_every and iteration % config.save_every == 0) \
                or iteration == config.iterations:
            save_checkpoint(accelerator, out, iteration, config.keep_checkpoints)
    bar.close()
    return iteration


@follows_progress
def main(config: RL2Config) -> dict:
    """Train; returns {"model_dir", "metrics": [...], "iterations", "env_steps"}."""
    from accelerate.utils import set_seed

    from training.train import (
        Recorder,
        find_checkpoint,
        load_checkpoint,
        make_accelerator,
        prepare_folder,
        record_checksums,
        start_trackers,
    )

    env = validate(config)
    out = Path(config.out)
    resume = find_checkpoint(out, config.resume_from_checkpoint)
    meta = {"env": env_meta(env)}
    if resume is not None:
        from transformers import AutoConfig

        saved = AutoConfig.from_pretrained(resume.parent.parent / "model_config")
        check_env(saved, meta, resume, f"--env {config.env}")
    accelerator = make_accelerator(config, out)
    set_seed(config.seed)
    model = build_model(config.model, meta["env"], config.model_options(),
                        max_context=config.trial_episodes * env.spec.episode_len,
                        hidden_inputs=config.hide_inputs)
    prepare_folder(config, out, model, accelerator)
    sampler = TaskSampler(env, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, eps=1e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: 1.0 - it / config.iterations if config.anneal_lr else 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    start_trackers(accelerator, config, out, "rl2")
    iteration = load_checkpoint(accelerator, resume)
    record = Recorder(accelerator, out)
    iteration = train_loop(config, out, accelerator, model, optimizer, scheduler, env, sampler,
                           iteration, record)
    record_checksums(accelerator, model, record, iteration)
    env_steps = (iteration * config.num_envs * config.trial_episodes * env.spec.episode_len
                 * accelerator.num_processes)
    model_dir = save_model(config, out, accelerator, model, sampler, iteration, env_steps,
                           record.rows)
    accelerator.wait_for_everyone()
    del model, optimizer, scheduler
    accelerator.free_memory()
    gc.collect()
    accelerator.end_training()
    return {"model_dir": str(model_dir), "metrics": record.rows, "iterations": iteration,
            "env_steps": env_steps}


def cli(argv: list[str] | None = None) -> dict:
    """Parse flags and run."""
    return main(parse_config(RL2Config, argv, prog="icl-rl rl2"))


if __name__ == "__main__":
    from icl_rl.cli import run

    run("rl2")
