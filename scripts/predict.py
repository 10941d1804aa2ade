"""Score every eligible user of an event log at a cutoff from a checkpoint (DESIGN section 6).

    python scripts/predict.py ckpt_path=CKPT [data=events data.path=FILE.parquet] \
        [cutoff=YYYY-MM-DD] [output=predictions.parquet|.csv] [scoring.accelerator=gpu]
    python scripts/predict.py ckpt_path=CKPT engine=ray ray.address=auto ray.shards=64
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from _cli import exit_on_bad_input, run
from seqchurn.errors import DataError
from seqchurn.inference import predict_log
from seqchurn.ray_engine import predict_log_ray


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@exit_on_bad_input(lambda cfg: cfg.paths.output_dir)
def main(cfg: DictConfig) -> None:
    engines = {"local": predict_log, "ray": predict_log_ray}
    if cfg.engine not in engines:
        raise DataError(f"engine must be one of {', '.join(engines)}, got {cfg.engine!r}")
    options = OmegaConf.to_container(cfg.ray, resolve=True) if cfg.engine == "ray" else {}
    summary = engines[cfg.engine](
        ckpt_path=cfg.ckpt_path,
        data=OmegaConf.to_container(cfg.data, resolve=True),
        output=cfg.output,
        cutoff=cfg.cutoff,
        **OmegaConf.to_container(cfg.scoring, resolve=True),
        **options,
    )
    print(f"wrote {summary['rows']} users to {summary['output']} (cutoff {summary['cutoff']})")


if __name__ == "__main__":
    run(main)
