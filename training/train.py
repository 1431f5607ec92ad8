"""`icl-rl train` / `accelerate launch -m training.train`: algorithm distillation with accelerate.

Any registered model family (`--model NAME`, its options in `--model-kwargs`) on windows of
learning histories. The canonical accelerate loop: trackers, prepare, accumulate, clip on
sync_gradients, periodic held-out validation, save_state checkpoints (atomic, last k kept) and
resume with skip_first_batches, end_training. The same command runs on one CPU, one GPU, or N
processes (`accelerate launch --config_file configs/accelerate/...`).
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
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from icl_rl.config import (
    follows_progress,
    parse_config,
    require_positive,
    save_config,
)
from icl_rl.data import (
    TARGETS,
    StreamingWindows,
    WindowDataset,
    check_start_fraction,
    collate_batch,
)
from icl_rl.dataset import (
    Histories,
    iter_histories,
    load_pooled,
    resolve_source,
    split_files,
    split_sources,
)
from icl_rl.errors import IclRlError
from icl_rl.io import atomic_write_text
from icl_rl.models import (
    FAMILIES,
    FamilyModel,
    build_model,
    check_env,
    family_config,
    family_of,
    load_model,
)
from icl_rl.transitions import check_parts
from training.config import TrainConfig

log = logging.getLogger(__name__)
CKPT_PREFIX = "step_"


def validate(config: TrainConfig) -> None:
    """Check ranges before anything heavy runs."""
    config.check_run_options()
    require_positive(config, "context", "batch_size", "grad_accum", "max_steps", "eval_batches")
    for name in ("warmup_steps", "eval_every", "num_workers"):
        if getattr(config, name) < 0:
            raise IclRlError(f"--{name.replace('_', '-')} must be >= 0")
    if config.target is not None and config.target not in TARGETS:
        raise IclRlError(f"--target must be one of {', '.join(TARGETS)}, got {config.target!r}")
    check_start_fraction(config.history_start_fraction, "--history-start-fraction")
    pooled = len(split_sources(config.dataset))
    if config.streaming and pooled > 1:
        raise IclRlError(f"--streaming reads one dataset; --dataset {config.dataset} names "
                         f"{pooled}: pool them without --streaming")
    check_parts(config.hide_inputs)
    if config.model not in FAMILIES:
        raise IclRlError(f"--model {config.model!r}: unknown model family; choose one of: "
                         f"{', '.join(sorted(FAMILIES))}")
    if not config.world_model_weight >= 0:
        raise IclRlError(f"--world-model-weight must be >= 0, got {config.world_model_weight}")
    if config.world_model_weight and not FAMILIES[config.model][1].supports_world_model:
        supported = sorted(n for n, (_, m) in FAMILIES.items() if m.supports_world_model)
        raise IclRlError(f"--world-model-weight: the {config.model} family has no world-model "
                         f"heads; use --model {' or '.join(supported)}, or leave it 0")
    # the family's option names and its own rules (e.g. width divisible by heads), now
    family_config(config.model, config.model_options())
    family_target(config.target, FAMILIES[config.model][1], config.model)
    if config.schedule not in ("cosine", "linear", "constant"):
        raise IclRlError(f"--schedule must be cosine, linear or constant, got {config.schedule!r}")
    if not config.lr > 0 or not config.max_grad_norm >= 0:
        raise IclRlError("--lr must be > 0 and --max-grad-norm >= 0")


def make_model(config: TrainConfig, meta: dict) -> FamilyModel:
    """A fresh model of `--model` for the dataset's env, or `--init-model` checked against it."""
    if config.init_model:
        model = load_model(config.init_model)
        check_env(model.config, meta, config.init_model, config.dataset)
        if config.hide_inputs and config.hide_inputs != model.config.hidden_inputs:
            raise IclRlError(f"--hide-inputs {','.join(config.hide_inputs)}: "
                             f"{config.init_model} was trained hiding "
                             f"{model.config.hidden_inputs or 'nothing'}; train a new model "
                             "for another ablation")
        weight = model.config.world_model_weight
        if config.world_model_weight and config.world_model_weight != weight:
            raise IclRlError(f"--world-model-weight {config.world_model_weight}: "
                             f"{config.init_model} was trained with {weight or 'no heads'} "
                             "(config.json: world_model_weight); leave the flag unset to keep "
                             "it, or train a new model")
        if config.context > model.config.max_context:
            raise IclRlError(
                f"--context {config.context} is longer than the model's context "
                f"{model.config.max_context} ({config.init_model}/config.json: max_context); "
                "lower --context or train a new model"
            )
        return model
    return build_model(config.model, meta["env"], config.model_options(),
                       max_context=config.context, hidden_inputs=config.hide_inputs,
                       world_model_weight=config.world_model_weight)


def family_target(target: str | None, model_class: type[FamilyModel], family: str) -> str:
    """--target for a family: its default when unset, else checked against what it learns."""
    allowed = model_class.targets
    if target is not None and target not in allowed:
        raise IclRlError(f"--target {target}: the {family} family learns "
                         f"{' or '.join(allowed)}; leave --target unset")
    return target or allowed[0]


def with_target(config: TrainConfig, model: FamilyModel) -> TrainConfig:
    """`config` with --target resolved for the model's family (an --init-model's own)."""
    family = family_of(model.config.model_type) or model.config.model_type
    return dataclasses.replace(config, target=family_target(config.target, type(model),
                                                           family))


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
    """Mean held-out loss and action accuracy over `batches` batches (and, with world-model
    heads, their loss, reward MSE and next-observation accuracy)."""
    model.eval()
    losses, correct, count = [], 0.0, 0.0
    parts: dict[str, list] = {}
    for i, batch in enumerate(loader):
        if i >= batches:
            break
        out = model(**batch)
        mask = batch["attention_mask"].bool()
        hit = ((out.logits.argmax(-1) == batch["targets"]) & mask).sum().float()
        n = mask.sum().float()
        loss, hit, n = accelerator.gather_for_metrics(
            (out.loss.detach()[None], hit[None], n[None]))
        losses.append(loss.mean())
        correct += float(hit.sum())
        count += float(n.sum())
        for name in ("world_model_loss", "reward_mse", "next_obs_accuracy", "return_mae"):
            value = getattr(out, name, None)
            if value is not None:
                parts.setdefault(name, []).append(
                    accelerator.gather_for_metrics(value.detach()[None]).mean())
    model.train()
    return {"eval/loss": float(torch.stack(losses).mean()), "eval/accuracy": correct / count,
            **{f"eval/{k}": float(torch.stack(v).mean()) for k, v in parts.items()}}


# -- the steps of a run, in order ----------------------------------------------------------------


def load_data(config: TrainConfig) -> tuple[Histories, Histories | None]:
    """The train split (its first chunk when streaming) and the held-out split, if any.

    A held-out split that exists but does not read is an error, like a bad train shard: only
    a dataset without one trains without validation, and says so.
    """
    if config.streaming:  # validate the card and the first chunk now, read the rest later
        first = next(iter_histories(config.dataset, "train", 1))
        return Histories(first.history, first.task_ids, first.meta, first.source), None
    sources = split_sources(config.dataset)
    train = load_pooled(sources, "train")
    held = [s for s in sources if has_split(s, "test")]
    for s in sources:
        if s not in held:
            log.warning("%s has no held-out split (data/test-*.parquet): %s", s,
                        "validating on the others'" if held else "training without validation")
    return train, load_pooled(held, "test") if held else None


def make_accelerator(config, out: Path):
    """The Accelerator of a run (`train`'s or `rl2`'s config); says how many processes on which
    device it trains with."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    accelerator = Accelerator(
        gradient_accumulation_steps=getattr(config, "grad_accum", 1),
        mixed_precision=config.mixed_precision,
        log_with=config.trackers() or None,
        project_dir=str(out),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        # --compile; otherwise what `accelerate launch --dynamo_backend` set (default: none)
        dynamo_backend="inductor" if getattr(config, "compile", False) else None,
        # The schedule counts optimizer steps whatever the number of processes; by default
        # accelerate would step it once per process per optimizer step.
        step_scheduler_with_optimizer=False,
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise IclRlError(f"launched as {launched} processes but accelerate set up "
                         f"{accelerator.num_processes}: they would train apart and overwrite "
                         "each other; on a machine without a GPU set ACCELERATE_USE_CPU=1 "
                         "(see configs/accelerate/cpu_2proc.yaml)")
    if accelerator.is_main_process:
        # `accelerate launch --num_processes 2` without a config file falls back to ONE
        # process on a machine without a GPU: say what really runs.
        log.info("training with %d process(es) on %s (%s, mixed precision %s)",
                 accelerator.num_processes, accelerator.device,
                 accelerator.distributed_type.value, accelerator.mixed_precision)
    return accelerator


def run_info(accelerator) -> dict:
    """What the run ran on, saved next to its config: the processes and the software."""
    from icl_rl.software import software

    return {"num_processes": accelerator.num_processes, "device": str(accelerator.device),
            "distributed_type": accelerator.distributed_type.value,
            "mixed_precision": accelerator.mixed_precision, "software": software()}


def prepare_folder(config: TrainConfig, out: Path, model: FamilyModel, accelerator) -> None:
    """Create the run folder, clear what a killed run left, save the config and run info."""
    if not accelerator.is_main_process:
        return
    out.mkdir(parents=True, exist_ok=True)
    # a run killed while saving leaves .tmp-* folders; they never count as checkpoints
    for stale in [*(out / "checkpoints").glob(".tmp-*"), *out.glob(".tmp-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    save_config(config, out / "train_config.json")
    atomic_write_text(out / "run_info.json", json.dumps(run_info(accelerator), indent=2))
    model.config.save_pretrained(out / "model_config")


def make_loaders(config: TrainConfig, train: Histories, heldout: Histories | None,
                 accelerator, queries: bool = False):
    """(train DataLoader or None, train stream or None, validation batches or None).

    `queries`: windows carry a query state labelled by the oracle (the DPT family)."""
    rank, world = accelerator.process_index, accelerator.num_processes
    if config.streaming:
        stream = StreamingWindows(config.dataset, "train", config.context, config.batch_size,
                                  config.seed, rank, world, target=config.target,
                                  history_start_fraction=config.history_start_fraction,
                                  queries=queries)
        val = None
        if has_split(config.dataset, "test"):
            val_stream = StreamingWindows(config.dataset, "test", config.context,
                                          config.batch_size, config.seed + 1, rank, world,
                                          target=config.target, queries=queries)
            val = [{k: v.to(accelerator.device) for k, v in b.items()}
                   for b in itertools.islice(val_stream, config.eval_batches)]
        return None, stream, val
    train_dl = DataLoader(WindowDataset(train.history, config.context, config.target,
                                        train.source, config.history_start_fraction, queries),
                          batch_size=config.batch_size, shuffle=True, drop_last=True,
                          collate_fn=collate_batch, num_workers=config.num_workers)
    if len(train_dl) == 0:
        raise IclRlError(f"{config.dataset}: fewer windows than --batch-size {config.batch_size}")
    val_dl = None
    if heldout is not None:
        val_set = WindowDataset(heldout.history, config.context, config.target, heldout.source,
                                queries=queries)
        g = torch.Generator().manual_seed(config.seed + 1)
        n_val = min(len(val_set), config.eval_batches * config.batch_size * world)
        subset = torch.utils.data.Subset(val_set, torch.randperm(len(val_set), generator=g)
                                         [:n_val].tolist())
        val_dl = DataLoader(subset, batch_size=config.batch_size, collate_fn=collate_batch)
    return train_dl, None, val_dl


def make_optimizer(config: TrainConfig, model: FamilyModel):
    """AdamW (no decay on biases and norms) and the warmup + decay schedule."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))


class Recorder:
    """Metrics rows: kept, logged to the trackers and appended to metrics.jsonl."""

    def __init__(self, accelerator, out: Path) -> None:
        self.accelerator, self.out, self.rows = accelerator, out, []

    def __call__(self, row: dict) -> None:
        self.rows.append(row)
        self.accelerator.log(row, step=row["step"])
        if self.accelerator.is_main_process:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")


def train_loop(config: TrainConfig, out: Path, accelerator, model, optimizer, scheduler,
               train_dl, stream, val_dl, step: int, record: Recorder) -> int:
    """Optimizer steps from `step` to --max-steps: log, validate, checkpoint. Returns the step."""
    micro_per_epoch = len(train_dl) if stream is None else None
    bar = tqdm(total=config.max_steps, initial=step, desc="train",
               disable=not (config.progress and accelerator.is_local_main_process))
    tokens_per_step = (config.batch_size * config.context * config.grad_accum
                       * accelerator.num_processes)
    model.train()
    t_last, steps_since = time.perf_counter(), 0
    running = []
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
    return step


def save_model(config: TrainConfig, out: Path, accelerator, model, meta: dict,
               metrics: list[dict], step: int) -> Path:
    """Write model/ atomically (weights, config with provenance, card); push if asked."""
    from icl_rl.model_card import write_model_card

    model_dir = out / "model"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = out / ".tmp-model"
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
        sources = split_sources(config.dataset)  # the first one's card stands for a pool
        unwrapped.config.provenance = {"dataset": sources[0], "steps": step,
                                       "context": config.context, "target": config.target,
                                       "learner": meta.get("learner"),
                                       **({"pooled_with": sources[1:]} if sources[1:] else {})}
        unwrapped.save_pretrained(tmp)
        save_config(config, tmp / "train_config.json")
        write_model_card(tmp, unwrapped.config, dataclasses.asdict(config), metrics, step)
        shutil.rmtree(model_dir, ignore_errors=True)
        os.replace(tmp, model_dir)
    accelerator.wait_for_everyone()
    if config.push_to_hub and accelerator.is_main_process:
        from icl_rl import hub

        hub.push_folder(model_dir, config.push_to_hub, "model", private=config.private)
        log.info("uploaded %s to the Hub model repo %s", model_dir, config.push_to_hub)
    return model_dir


@follows_progress
def main(config: TrainConfig) -> dict:
    """Train; returns {"model_dir", "metrics": [...], "final_eval_loss", ...}."""
    from accelerate.utils import set_seed

    validate(config)
    out = Path(config.out)
    resume = find_checkpoint(out, config.resume_from_checkpoint)
    train, heldout = load_data(config)
    if resume is not None:
        from transformers import AutoConfig

        saved = AutoConfig.from_pretrained(resume.parent.parent / "model_config")
        check_env(saved, train.meta, resume, config.dataset)
    accelerator = make_accelerator(config, out)
    set_seed(config.seed)
    model = make_model(config, train.meta)
    config = with_target(config, model)
    prepare_folder(config, out, model, accelerator)
    train_dl, stream, val_dl = make_loaders(config, train, heldout, accelerator,
                                            type(model).needs_queries)
    optimizer, scheduler = make_optimizer(config, model)
    if stream is None:
        model, optimizer, train_dl, scheduler = accelerator.prepare(
            model, optimizer, train_dl, scheduler)
    else:  # the stream is already split by process: it must not be prepared (split) again
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if val_dl is not None and not config.streaming:
        val_dl = accelerator.prepare(val_dl)
    start_trackers(accelerator, config, out, "train")
    step = load_checkpoint(accelerator, resume)
    record = Recorder(accelerator, out)
    step = train_loop(config, out, accelerator, model, optimizer, scheduler, train_dl, stream,
                      val_dl, step, record)
    if val_dl is not None and not any("eval/loss" in m for m in record.rows):
        # resumed from the final checkpoint: still report the held-out loss of what we return
        record({"step": step, **evaluate(model, val_dl, accelerator, config.eval_batches)})
    sums = record_checksums(accelerator, model, record, step)
    model_dir = save_model(config, out, accelerator, model, train.meta, record.rows, step)
    # Tear down in order, every rank together: the prepared model (DDP) holds the process
    # group, so free it first; otherwise the group is destroyed only when main() returns, at
    # the moment the other ranks exit, and gloo can hang there.
    accelerator.wait_for_everyone()
    del model, optimizer, scheduler, train_dl, val_dl
    accelerator.free_memory()
    gc.collect()
    accelerator.end_training()
    evals = [m["eval/loss"] for m in record.rows if "eval/loss" in m]
    return {"model_dir": str(model_dir), "metrics": record.rows, "steps": step,
            "final_eval_loss": evals[-1] if evals else None, "param_checksums": sums}


def start_trackers(accelerator, config, out: Path, job_type: str) -> None:
    """Init --report-to's trackers with the run's config (wandb runs live in the run folder)."""
    if config.trackers():
        accelerator.init_trackers(
            config.project, config={**dataclasses.asdict(config), **run_info(accelerator)},
            init_kwargs={"wandb": {"dir": str(out), "job_type": job_type}}
            if "wandb" in config.trackers() else {})


def load_checkpoint(accelerator, resume: Path | None) -> int:
    """Restore a checkpoint (model, optimizer, scheduler, RNG); the step it was saved at."""
    if resume is None:
        return 0
    accelerator.load_state(str(resume))
    step = json.loads((resume / "trainer_state.json").read_text())["step"]
    log.info("resumed from %s at step %d", resume, step)
    return step


def record_checksums(accelerator, model, record: Recorder, step: int) -> list[float]:
    """Every rank must hold the same weights: record each rank's parameter sum as evidence."""
    with torch.no_grad():
        checksum = torch.stack([p.double().sum() for p in model.parameters()]).sum()
        sums = accelerator.gather(checksum[None].to(accelerator.device)).tolist()
    record({"step": step, "ranks/param_checksums": sums})
    if max(sums) != min(sums):
        log.warning("ranks disagree on the parameters: %s", sums)
    return sums


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


def cli(argv: list[str] | None = None) -> dict:
    """Parse flags and run."""
    return main(parse_config(TrainConfig, argv, prog="icl-rl train"))


if __name__ == "__main__":
    from icl_rl.cli import run

    run("train")
