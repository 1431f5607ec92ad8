"""wandb through accelerate's tracker, offline: training metrics and eval curves land in the run
folder."""

from __future__ import annotations

import json
import time

from data_gen.generate import GenerateConfig
from data_gen.generate import main as generate
from eval.evaluate import EvalConfig
from eval.evaluate import main as evaluate
from training.train import TrainConfig
from training.train import main as train


def test_wandb_offline_run_has_metrics_and_media(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    data = generate(GenerateConfig(out=str(tmp_path / "d"), num_arms=3, learner="ucb",
                                   num_histories=60, steps=20, shard_size=60,
                                   heldout_fraction=0.25))
    run = train(TrainConfig(dataset=str(data), out=str(tmp_path / "run"), context=20,
                            model_kwargs={"hidden_size": 16, "num_layers": 1, "num_heads": 2},
                            batch_size=8,
                            max_steps=10, log_every=5, eval_every=5, save_every=0,
                            report_to="wandb", progress=False))
    [train_run] = (tmp_path / "run/wandb").glob("offline-run-*")
    [record] = train_run.glob("run-*.wandb")  # offline: config and history live in here
    keys = (b"max_steps", b"train/loss", b"train/lr", b"train/tokens_per_s", b"eval/loss")
    # wandb's service process writes the record; late in a long test session it has been
    # seen to finish writing after finish() returned (the file held its header only), so
    # the test gives it up to 30 s before it reads what is there
    deadline = time.monotonic() + 30
    while not all(k in record.read_bytes() for k in keys) and time.monotonic() < deadline:
        time.sleep(0.5)
    raw = record.read_bytes()
    for key in keys:
        assert key in raw, key
    evaluate(EvalConfig(model=run["model_dir"], dataset=str(data), out=str(tmp_path / "ev"),
                        num_tasks=8, episodes=10, report_to="wandb", progress=False))
    [eval_run] = (tmp_path / "ev/wandb").glob("offline-run-*")
    media = list((eval_run / "files/media").rglob("*"))
    assert any(p.suffix == ".png" for p in media)  # the curves PNG
    tables = [p for p in media if p.suffix == ".json"]  # the line plots' data
    assert tables and any("model" in json.dumps(json.loads(p.read_text())) for p in tables)
