"""`icl-rl train` / `accelerate launch -m training.train`: algorithm distillation with accelerate.

The canonical accelerate loop: trackers, prepare, accumulate, clip on sync_gradients, periodic
held-out validation, save_state checkpoints (atomic, last k kept) and resume with
skip_first_batches, end_training. The same command runs on one CPU, one GPU, or N processes.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from icl_rl.config import parse_config, require_positive, save_config
from icl_rl.data import TARGETS, StreamingWindows, WindowDataset, collate_batch
from icl_rl.dataset import (
    Histories,
    atomic_write_text,
    iter_histories,
    load_histories,
    resolve_source,
    split_files,
)
from icl_rl.errors import IclRlError
from icl_rl.models import ADConfig, ADModel

log = logging.getLogger(__name__)
CKPT_PREFIX = "step_"


@dataclass(frozen=True)
class TrainConfig:
    """Train an Algorithm Distillation transformer on learning histories."""

    dataset: str = "runs/dataset"
    """Dataset folder, parquet file or Hub repo id (made by `icl-rl generate`)."""
    out: str = "runs/model"
    """Run folder: checkpoints/, metrics.jsonl, and the final model in model/."""
    context: int = 256
    """Window length K in transitions (= tokens); the model's context."""
    hidden_size: int = 128
    """Transformer width d_model."""
    num_layers: int = 4
    """Decoder layers."""
    num_heads: int = 4
    """Attention heads."""
    dropout: float = 0.0
    """Attention dropout."""
    target: str = "actions"
    """What the model learns to predict at every step: `actions`, the source learner's own
    (Algorithm Distillation), or `optimal_actions`, the oracle's action in that state given
    the true task (the Decision-Pretrained Transformer's label: the model has to infer the
    task from the context)."""
    history_start_fraction: float = 0.0
    """Share of training windows that start at a history's first step. At evaluation the
    model's first `context` steps (its search of a new task) see the history from there, but
    only 1 in T - K + 1 random windows does; 0 samples windows uniformly."""
    hide_inputs: str | None = None
    """Comma-separated parts of every token the model never sees: action, reward,
    episode_start, observation (ablations of the ingredients of in-context RL)."""
    init_model: str | None = None
    """Start from this trained model folder instead of a fresh one (same env family)."""
    batch_size: int = 32
    """Windows per batch per process."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    max_steps: int = 2000
    """Optimizer steps."""
    lr: float = 3e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 100
    """Linear warmup steps."""
    schedule: str = "cosine"
    """LR schedule after warmup: cosine, linear or constant."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    eval_every: int = 200
    """Validate on the held-out split every this many steps (0: only at the end)."""
    eval_batches: int = 8
    """Batches of held-out windows per validation."""
    save_every: int = 500
    """Checkpoint every this many steps (0: only at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept; older ones are deleted."""
    resume_from_checkpoint: str | None = None
    """A checkpoint folder, `latest` (must exist) or `auto` (latest if any, else fresh)."""
    report_to: str = "none"
    """Trackers: none, wandb, tensorboard (comma-separated for several)."""
    project: str = "icl-rl"
    """Tracker project name."""
    log_every: int = 20
    """Log training metrics every this many steps."""
    seed: int = 0
    """Seed for initialisation and data order."""
    mixed_precision: str = "no"
    """no, fp16 or bf16 (bf16 on GPUs; it is slow on most CPUs)."""
    num_workers: int = 0
    """DataLoader worker processes."""
    streaming: bool = False
    """Read the dataset chunk by chunk instead of loading it (for data larger than memory);
    each process reads its own shards."""
    progress: bool = True
    """Show a progress bar (main process only)."""
    push_to_hub: str | None = None
    """After training, upload the final model (with its model card) to this Hub repo."""
    private: bool = False
    """Create the Hub repo as private."""


def validate(config: TrainConfig) -> None:
    """Check ranges before anything heavy runs."""
    require_positive(config, "context", "hidden_size", "num_layers", "num_heads", "batch_size",
                     "grad_accum", "max_steps", "eval_batches", "keep_checkpoints", "log_every")
    for name in ("warmup_steps", "eval_every", "save_every", "num_workers"):
        if getattr(config, name) < 0:
            raise IclRlError(f"--{name.replace('_', '-')} must be >= 0")
    if config.target not in TARGETS:
        raise IclRlError(f"--target must be one of {', '.join(TARGETS)}, got {config.target!r}")
    if not 0 <= config.history_start_fraction < 1:
        raise IclRlError(f"--history-start-fraction must be in [0, 1), got "
                         f"{config.history_start_fraction}")
    for name in hidden_inputs(config):
        if name not in ADConfig.TOKEN_PARTS:
            raise IclRlError(f"--hide-inputs: unknown part {name!r}; choose among "
                             f"{', '.join(ADConfig.TOKEN_PARTS)}")
    if config.hidden_size % config.num_heads:
        raise IclRlError(f"--hidden-size {config.hidden_size} must be divisible by --num-heads "
                         f"{config.num_heads}")
    if config.schedule not in ("cosine", "linear", "constant"):
        raise IclRlError(f"--schedule must be cosine, linear or constant, got {config.schedule!r}")
    if not config.lr > 0 or not config.max_grad_norm >= 0:
        raise IclRlError("--lr must be > 0 and --max-grad-norm >= 0")
    trackers = [t for t in config.report_to.split(",") if t and t != "none"]
    bad = sorted(set(trackers) - {"wandb", "tensorboard"})
    if bad:
        raise IclRlError(f"--report-to: unknown tracker(s) {bad}; use none, wandb, tensorboard")


def hidden_inputs(config: TrainConfig) -> list[str]:
    """--hide-inputs as a list."""
    return [x.strip() for x in (config.hide_inputs or "").split(",") if x.strip()]


def build_model(config: TrainConfig, meta: dict) -> ADModel:
    """A fresh model for the dataset's env, or `--init-model` checked against it."""
    spec = meta["env"]["spec"]
    if config.init_model:
        model = load_model(config.init_model)
        check_env(model.config, meta, config.init_model, config.dataset)
        if hidden_inputs(config) and hidden_inputs(config) != model.config.hidden_inputs:
            raise IclRlError(f"--hide-inputs {config.hide_inputs}: {config.init_model} was "
                             f"trained hiding {model.config.hidden_inputs or 'nothing'}; "
                             "train a new model for another ablation")
        if config.context > model.config.max_context:
            raise IclRlError(
                f"--context {config.context} is longer than the model's context "
                f"{model.config.max_context} ({config.init_model}/config.json: max_context); "
                "lower --context or train a new model"
            )
        return model
    return ADModel(ADConfig(
        obs_dim=spec["obs_dim"], num_actions=spec["num_actions"], env_name=meta["env"]["name"],
        obs_levels=spec.get("obs_levels"),
        env_params=meta["env"]["params"], hidden_size=config.hidden_size,
        num_layers=config.num_layers, num_heads=config.num_heads,
        max_context=config.context, dropout=config.dropout,
        hidden_inputs=hidden_inputs(config),
    ))


def load_model(path: str | Path) -> ADModel:
    """Load a trained model folder, with clear errors for what is not one."""
    if not Path(path).exists() and str(path).count("/") == 1:  # a Hub repo id
        from icl_rl import hub

        path = hub.download(str(path), "model")
    path = Path(path)
    if path.is_dir() and (path / "model" / "config.json").exists():
        path = path / "model"  # a run folder
    if not (path / "config.json").exists():
        raise IclRlError(f"{path}: no config.json; pass a folder written by `icl-rl train` "
                         "(its model/ subfolder) or save_pretrained")
    try:
        cfg = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise IclRlError(f"{path}/config.json does not parse ({e})") from None
    if cfg.get("model_type") != ADConfig.model_type:
        raise IclRlError(f"{path}/config.json: model_type {cfg.get('model_type')!r} is not "
                         f"{ADConfig.model_type!r}; this is not an icl-rl model")
    return ADModel.from_pretrained(path)


def check_env(model_config: ADConfig, meta: dict, model_src, data_src) -> None:
    """Refuse data from another env family or action/observation space than the model's."""
    env = meta["env"]
    spec = env["spec"]
    mismatch = (model_config.env_name != env["name"]
                or model_config.num_actions != spec["num_actions"]
                or model_config.obs_dim != spec["obs_dim"])
    if mismatch:
        raise IclRlError(
            f"{data_src} is {env['name']} (obs_dim {spec['obs_dim']}, {spec['num_actions']} "
            f"actions) but the model {model_src} was trained for {model_config.env_name} "
            f"(obs_dim {model_config.obs_dim}, {model_config.num_actions} actions); use a "
            "dataset of the model's env or train a new model"
        )


def find_checkpoint(out: Path, resume: str | None) -> Path | None:
    """Resolve --resume-from-checkpoint to a folder (or None to start fresh)."""
    ckpts = sorted((out / "checkpoints").glob(f"{CKPT_PREFIX}*"))
    if resume in (None, ""):
        if ckpts or (out / "model").exists():
            raise IclRlError(f"--out {out} already holds a run; pass --resume-from-checkpoint "
                             "latest to continue it or choose a new --out (nothing overwritten)")
        return None
    if resume in ("latest", "auto"):
        if ckpts:
            return ckpts[-1]
        if resume == "auto":
            return None
        raise IclRlError(f"--resume-from-checkpoint latest: {out}/checkpoints has no checkpoint")
    path = Path(resume)
    if not (path / "trainer_state.json").exists():
        raise IclRlError(f"--resume-from-checkpoint {path}: not a checkpoint folder (no "
                         "trainer_state.json); use a checkpoints/step_* folder or `latest`")
    return path


def lr_lambda(config: TrainConfig):
    """Warmup then cosine / linear decay to 0, or constant."""

    def f(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        if config.schedule == "constant":
            return 1.0
        frac = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
        frac = min(frac, 1.0)
        return 0.5 * (1 + math.cos(math.pi * frac)) if config.schedule == "cosine" else 1 - frac

    return f


def save_checkpoint(accelerator, out: Path, step: int, keep: int) -> None:
    """save_state into a temporary folder, rename it into place, drop old checkpoints."""
    ckpt_dir = out / "checkpoints"
    final = ckpt_dir / f"{CKPT_PREFIX}{step:08d}"
    tmp = ckpt_dir / f".tmp-{CKPT_PREFIX}{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(ckpt_dir.glob(f"{CKPT_PREFIX}*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


@torch.no_grad()
def evaluate(model, loader, accelerator, batches: int) -> dict:
    """Mean held-out loss and action accuracy over `batches` batches."""
    model.eval()
    losses, correct, count = [], 0.0, 0.0
    for i, batch in enumerate(loader):
        if i >= batches:
            break
        out = model(**batch)
        mask = batch["attention_mask"].bool()
        hit = ((out.logits.argmax(-1) == batch["actions"]) & mask).sum().float()
        n = mask.sum().float()
        loss, hit, n = accelerator.gather_for_metrics(
            (out.loss.detach()[None], hit[None], n[None]))
        losses.append(loss.mean())
        correct += float(hit.sum())
        count += float(n.sum())
    model.train()
    return {"eval/loss": float(torch.stack(losses).mean()), "eval/accuracy": correct / count}


def main(config: TrainConfig) -> dict:
    """Train; returns {"model_dir", "metrics": [...], "final_eval_loss", ...}."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    validate(config)
    out = Path(config.out)
    resume = find_checkpoint(out, config.resume_from_checkpoint)
    if config.streaming:  # validate the card and the first chunk now, read the rest later
        first = next(iter_histories(config.dataset, "train", 1))
        train = Histories(first.history, first.task_ids, first.meta, first.source)
        heldout = None
    else:
        train = load_histories(config.dataset, "train")
        try:
            heldout = load_histories(config.dataset, "test")
        except IclRlError:
            heldout = None
    if resume is not None:
        saved = ADConfig.from_pretrained(resume.parent.parent / "model_config")
        check_env(saved, train.meta, resume, config.dataset)
    trackers = [t for t in config.report_to.split(",") if t and t != "none"]
    accelerator = Accelerator(
        gradient_accumulation_steps=config.grad_accum,
        mixed_precision=config.mixed_precision,
        log_with=trackers or None,
        project_dir=str(out),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        # The schedule counts optimizer steps whatever the number of processes; by default
        # accelerate would step it once per process per optimizer step.
        step_scheduler_with_optimizer=False,
    )
    set_seed(config.seed)
    model = build_model(config, train.meta)
    num_actions, obs_levels = model.config.num_actions, model.config.obs_levels
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        # a run killed while saving leaves .tmp-* folders; they never count as checkpoints
        for stale in [*(out / "checkpoints").glob(".tmp-*"), *out.glob(".tmp-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        save_config(config, out / "train_config.json")
        model.config.save_pretrained(out / "model_config")
    stream = None
    if config.streaming:
        stream = StreamingWindows(config.dataset, "train", config.context, num_actions,
                                  obs_levels, config.batch_size, config.seed,
                                  accelerator.process_index, accelerator.num_processes,
                                  target=config.target,
                                  history_start_fraction=config.history_start_fraction)
        train_dl = None
    else:
        train_dl = DataLoader(WindowDataset(train.history, config.context, num_actions,
                                            obs_levels, config.target, train.source,
                                            config.history_start_fraction),
                              batch_size=config.batch_size, shuffle=True, drop_last=True,
                              collate_fn=collate_batch, num_workers=config.num_workers)
        if len(train_dl) == 0:
            raise IclRlError(f"{config.dataset}: fewer windows than --batch-size "
                             f"{config.batch_size}")
    val_dl = None
    if config.streaming and has_split(config.dataset, "test"):
        val_stream = StreamingWindows(config.dataset, "test", config.context, num_actions,
                                      obs_levels, config.batch_size, config.seed + 1,
                                      accelerator.process_index, accelerator.num_processes,
                                      target=config.target)
        val_dl = [{k: v.to(accelerator.device) for k, v in b.items()}
                  for b in itertools.islice(val_stream, config.eval_batches)]
    if heldout is not None:
        val_set = WindowDataset(heldout.history, config.context, num_actions, obs_levels,
                                config.target, heldout.source)
        g = torch.Generator().manual_seed(config.seed + 1)
        n_val = min(len(val_set), config.eval_batches * config.batch_size
                    * accelerator.num_processes)
        subset = torch.utils.data.Subset(val_set, torch.randperm(len(val_set), generator=g)
                                         [:n_val].tolist())
        val_dl = DataLoader(subset, batch_size=config.batch_size, collate_fn=collate_batch)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    if stream is None:
        model, optimizer, train_dl, scheduler = accelerator.prepare(
            model, optimizer, train_dl, scheduler)
    else:  # the stream is already split by process: it must not be prepared (split) again
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if val_dl is not None and not config.streaming:
        val_dl = accelerator.prepare(val_dl)
    if trackers:  # wandb runs live inside the run folder
        accelerator.init_trackers(config.project, config=dataclasses.asdict(config),
                                  init_kwargs={"wandb": {"dir": str(out), "job_type": "train"}}
                                  if "wandb" in trackers else {})

    step = 0
    if resume is not None:
        accelerator.load_state(str(resume))
        step = json.loads((resume / "trainer_state.json").read_text())["step"]
        log.info("resumed from %s at step %d", resume, step)
    micro_per_epoch = len(train_dl) if stream is None else None
    metrics: list[dict] = []
    bar = tqdm(total=config.max_steps, initial=step, desc="train",
               disable=not (config.progress and accelerator.is_local_main_process))
    tokens_per_step = (config.batch_size * config.context * config.grad_accum
                       * accelerator.num_processes)
    model.train()
    t_last, steps_since = time.perf_counter(), 0
    running = []

    def record(row: dict) -> None:
        metrics.append(row)
        accelerator.log(row, step=row["step"])
        if accelerator.is_main_process:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    while step < config.max_steps:
        consumed = step * config.grad_accum  # micro-batches already used
        if stream is not None:  # one endless pass over reshuffled epochs, resumed by skipping
            loader = itertools.islice(endless(stream, accelerator.device), consumed, None)
        else:
            epoch, skip = divmod(consumed, micro_per_epoch)
            train_dl.set_epoch(epoch)
            loader = accelerator.skip_first_batches(train_dl, skip) if skip else train_dl
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            running.append(loss.detach())
            if not accelerator.sync_gradients:
                continue
            step += 1
            steps_since += 1
            bar.update(1)
            if step % config.log_every == 0 or step == config.max_steps:
                mean_loss = accelerator.reduce(torch.stack(running).mean(), "mean")
                dt = time.perf_counter() - t_last
                record({"step": step, "train/loss": float(mean_loss),
                        "train/lr": scheduler.get_last_lr()[0],
                        "train/tokens_per_s": tokens_per_step * steps_since / dt})
                bar.set_postfix(loss=f"{float(mean_loss):.4f}")
                running, t_last, steps_since = [], time.perf_counter(), 0
            if val_dl is not None and ((config.eval_every and step % config.eval_every == 0)
                                       or step == config.max_steps):
                record({"step": step, **evaluate(model, val_dl, accelerator,
                                                  config.eval_batches)})
            if (config.save_every and step % config.save_every == 0) or step == config.max_steps:
                save_checkpoint(accelerator, out, step, config.keep_checkpoints)
            if step >= config.max_steps:
                break
    bar.close()
    if val_dl is not None and not any("eval/loss" in m for m in metrics):
        # resumed from the final checkpoint: still report the held-out loss of what we return
        record({"step": step, **evaluate(model, val_dl, accelerator, config.eval_batches)})
    with torch.no_grad():  # every rank must hold the same weights; record the evidence
        checksum = torch.stack([p.double().sum() for p in model.parameters()]).sum()
        sums = accelerator.gather(checksum[None].to(accelerator.device)).tolist()
    record({"step": step, "ranks/param_checksums": sums})
    if max(sums) != min(sums):
        log.warning("ranks disagree on the parameters: %s", sums)
    model_dir = out / "model"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = out / ".tmp-model"
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.config.training = {"dataset": config.dataset, "steps": step,
                                     "context": config.context, "target": config.target,
                                     "learner": train.meta.get("learner")}
        unwrapped.save_pretrained(tmp)
        save_config(config, tmp / "train_config.json")
        atomic_write_text(tmp / "README.md", model_card(unwrapped.config, config, metrics, step))
        shutil.rmtree(model_dir, ignore_errors=True)
        os.replace(tmp, model_dir)
    accelerator.wait_for_everyone()
    if config.push_to_hub and accelerator.is_main_process:
        from icl_rl import hub

        hub.push_folder(model_dir, config.push_to_hub, "model", private=config.private)
        log.info("uploaded %s to the Hub model repo %s", model_dir, config.push_to_hub)
    # Tear down in order, every rank together: the prepared model (DDP) holds the process
    # group, so free it first; otherwise the group is destroyed only when main() returns, at
    # the moment the other ranks exit, and gloo can hang there.
    accelerator.wait_for_everyone()
    del model, optimizer, scheduler, train_dl, val_dl
    accelerator.free_memory()
    gc.collect()
    accelerator.end_training()
    evals = [m["eval/loss"] for m in metrics if "eval/loss" in m]
    return {"model_dir": str(model_dir), "metrics": metrics, "steps": step,
            "final_eval_loss": evals[-1] if evals else None, "param_checksums": sums}


def endless(stream, device):
    """Batches of `stream` on `device`, epoch after epoch."""
    for epoch in itertools.count():
        stream.set_epoch(epoch)
        for batch in stream:
            yield {k: v.to(device) for k, v in batch.items()}


def has_split(source: str, split: str) -> bool:
    """Whether a dataset has `split`."""
    try:
        split_files(resolve_source(source), split)
    except IclRlError:
        return False
    return True


def model_card(mc: ADConfig, config: TrainConfig, metrics: list[dict], step: int) -> str:
    """README.md of a trained model: what it is, what it was trained on, how to use it."""
    import yaml

    from icl_rl import __version__

    evals = [m for m in metrics if "eval/loss" in m]
    learner = (mc.training or {}).get("learner") or {}
    kind, tag, what = (("Algorithm Distillation", "algorithm-distillation",
                        "the learner's next action") if config.target == "actions" else
                       ("Decision-Pretrained Transformer", "decision-pretrained-transformer",
                        "the oracle's action in every state"))
    header = {"library_name": "icl-rl",
              "tags": ["reinforcement-learning", "in-context-learning", tag, mc.env_name]}
    if not Path(config.dataset).exists():
        header["datasets"] = [config.dataset]
    quality = (f"Held-out action loss {evals[-1]['eval/loss']:.4f}, accuracy "
               f"{evals[-1]['eval/accuracy']:.1%} (step {evals[-1]['step']})." if evals else "")
    rows = "\n".join(f"| {k} | {v} |" for k, v in dataclasses.asdict(config).items()
                     if k not in ("push_to_hub", "private", "progress"))
    return f"""---
{yaml.safe_dump(header, sort_keys=False)}---

# {kind} model for `{mc.env_name}`

A {mc.num_layers}-layer, {mc.hidden_size}-wide decoder (transformers LlamaModel backbone) trained
with icl-rl {__version__} to predict {what} from the learning histories of
`{learner.get('name', '?')}` in `{config.dataset}` ({step} steps, context {mc.max_context}
transitions).
Env: `{mc.env_name}` {mc.env_params}. {quality}

## Use

```python
import icl_rl.models  # registers the model classes with transformers' Auto classes
from transformers import AutoModel
model = AutoModel.from_pretrained("REPO_OR_PATH")
```

In context on held-out tasks: `icl-rl eval --model REPO_OR_PATH --episodes 40`.

## Training configuration

| option | value |
|---|---|
{rows}
"""


def cli(argv: list[str] | None = None) -> dict:
    """Parse flags and run."""
    return main(parse_config(TrainConfig, argv, prog="icl-rl train"))


if __name__ == "__main__":
    from icl_rl.cli import run

    run("train")
