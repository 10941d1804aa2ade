"""Train a churn model and report its test metrics.

python scripts/train.py [model=logistic|lstm|transformer] [data=cdnow|synthetic|events] [seed=0]
python scripts/train.py -m model=logistic,lstm seed=0,1
"""

from __future__ import annotations

import hydra
import numpy as np
from omegaconf import DictConfig

from _cli import exit_on_bad_input, run
from seqchurn.train import train


def _print_summary(metrics: dict, ckpt: str) -> None:
    if ckpt:
        print(f"best checkpoint: {ckpt}")
    shown = [k for k in sorted(metrics) if k.startswith("test/")]
    print("  ".join(f"{k}={metrics[k]:.4f}" for k in shown))


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@exit_on_bad_input(lambda cfg: cfg.paths.output_dir)
def main(cfg: DictConfig) -> float | None:
    metrics, objects = train(cfg)
    if objects["trainer"].is_global_zero:  # under DDP every rank returns the same metrics
        _print_summary(metrics, objects["best_ckpt"])
    optimized = cfg.get("optimized_metric") or ""
    value = metrics.get(f"{optimized}_best", metrics.get(optimized))
    return None if value is None or np.isnan(value) else value


if __name__ == "__main__":
    run(main)
