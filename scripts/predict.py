"""Score every eligible user of an event log at a cutoff from a checkpoint (DESIGN section 6).

    python scripts/predict.py ckpt_path=CKPT [data=events data.path=FILE.parquet] \
        [cutoff=YYYY-MM-DD] [output=predictions.parquet|.csv] [trainer.accelerator=gpu]
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from _cli import exit_on_bad_input
from seqchurn.data.events import read_users
from seqchurn.data.labels import to_day
from seqchurn.inference import predict_log

log = logging.getLogger("seqchurn.predict")


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@exit_on_bad_input(lambda cfg: cfg.paths.output_dir)
def main(cfg: DictConfig) -> None:
    data = cfg.data
    users = read_users(data.users_path) if data.get("users_path") else None
    summary = predict_log(
        ckpt_path=cfg.ckpt_path,
        source=data.source,
        path=data.get("path"),
        columns=dict(data.get("columns") or {}),
        users=users,
        cutoff=to_day(cfg.cutoff) if cfg.cutoff else None,
        output=cfg.output,
        on_bad_rows=data.get("on_bad_rows", "raise"),
        batch_size=cfg.batch_size,
        chunk_rows=cfg.chunk_rows,
        stream=cfg.stream,
        explain=None if cfg.explain in (None, "none") else cfg.explain,
        explain_steps=cfg.explain_steps,
        accelerator=cfg.trainer.accelerator,
        progress=cfg.progress,
    )
    print(f"wrote {summary['rows']} users to {summary['output']} (cutoff {summary['cutoff']})")


if __name__ == "__main__":
    main()
