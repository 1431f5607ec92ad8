"""`icl-rl demo` (`make demo`): the whole pipeline on a small default, in minutes on a CPU.

Generates UCB learning histories on 5-arm Bernoulli bandits, trains an AD transformer on them
with the accelerate loop, evaluates it in context on fresh held-out tasks next to UCB, Thompson
sampling, uniform random and the oracle, and writes report.md and curves.png.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from data_gen.generate import GenerateConfig
from data_gen.generate import main as generate
from eval.evaluate import EvalConfig
from eval.evaluate import main as evaluate
from icl_rl.config import parse_config
from icl_rl.io import atomic_write_text
from pipeline.config import DemoConfig
from training.train import TrainConfig
from training.train import main as train


def main(config: DemoConfig) -> dict:
    """Run the pipeline; returns the eval results plus timings."""
    out = Path(config.out)
    times = {}
    t0 = time.perf_counter()
    data = generate(GenerateConfig(
        out=str(out / "dataset"), env="bernoulli_bandit", num_arms=config.num_arms,
        learner=config.learner, num_histories=config.num_histories, steps=config.steps,
        seed=config.seed, progress=config.progress))
    times["generate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    run = train(TrainConfig(
        dataset=str(data), out=str(out / "run"), context=config.steps,
        model_kwargs={"hidden_size": config.hidden_size, "num_layers": config.num_layers,
                      "num_heads": config.num_heads, "num_kv_heads": config.num_kv_heads,
                      "intermediate_size": config.intermediate_size},
        batch_size=config.batch_size, max_steps=config.train_steps, lr=config.lr,
        warmup_steps=100, eval_every=max(1, config.train_steps // 5),
        save_every=max(1, config.train_steps // 3), seed=config.seed,
        resume_from_checkpoint="auto", progress=config.progress))
    times["train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = evaluate(EvalConfig(
        model=run["model_dir"], dataset=str(data), out=str(out / "eval"),
        num_tasks=config.num_tasks, episodes=config.steps, seed=config.seed + 10_000,
        progress=config.progress))
    times["eval_s"] = time.perf_counter() - t0
    times["total_s"] = sum(times.values())
    agents = results["agents"]
    summary = {
        "model_regret": agents["model"]["final_regret"],
        "source_regret": agents["source"]["final_regret"],
        "random_regret": agents["random"]["final_regret"],
        "model_vs_source": agents["model"]["final_regret"] / agents["source"]["final_regret"],
        "model_vs_random": agents["model"]["final_regret"] / agents["random"]["final_regret"],
        "final_eval_loss": run["final_eval_loss"],
        **times,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    report = (out / "eval" / "report.md").read_text().replace("(curves.png)",
                                                              "(eval/curves.png)")
    atomic_write_text(out / "report.md", report + f"""
## Demo run

{config.num_histories} {config.learner} histories of {config.steps} pulls generated in
{times['generate_s']:.0f} s; {config.train_steps} training steps in {times['train_s']:.0f} s
(held-out action loss {run['final_eval_loss']:.3f}); evaluation in {times['eval_s']:.0f} s.
Total {times['total_s']:.0f} s.

At the horizon the model's cumulative regret is {summary['model_vs_source']:.2f}x its source
learner's and {summary['model_vs_random']:.2f}x uniform random's.
""")
    return {"results": results, "summary": summary}


def cli(argv: list[str] | None = None) -> dict:
    """Parse flags and run."""
    res = main(parse_config(DemoConfig, argv, prog="icl-rl demo"))
    print(json.dumps(res["summary"], indent=2))
    return res
