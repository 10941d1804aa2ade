"""Serve early warnings as events arrive (src/seqchurn/realtime): FastAPI on uvicorn.

    python scripts/serve.py ckpt_path=CKPT [store.url=sqlite:///store.db] [port=8000] [clock=events]

A checkpoint or store that cannot be used stops it at start-up with one line and exit code 2.
"""

from __future__ import annotations

import logging
import threading

import hydra
import torch
from omegaconf import DictConfig

from _cli import exit_on_bad_input, run
from seqchurn.errors import DataError
from seqchurn.realtime.app import create_app
from seqchurn.realtime.service import Limits, RiskService
from seqchurn.realtime.store import Store

log = logging.getLogger(__name__)


def _sweeper(service: RiskService, interval_s: float, stop: threading.Event) -> None:
    """Sweep at start, then every `interval_s`; a failed sweep is logged and retried next time."""
    while not stop.is_set():
        try:
            result = service.sweep()
            log.info("sweep: %s", result)
        except Exception:  # the next interval tries again; the service keeps serving
            log.exception("sweep failed")
        stop.wait(interval_s)


def build_service(cfg: DictConfig) -> RiskService:
    if cfg.sweep.interval_s < 0:
        raise DataError(f"sweep.interval_s must be >= 0, got {cfg.sweep.interval_s}")
    if not 0 <= cfg.ingest.group_wait_ms <= 1000:
        raise DataError(
            f"ingest.group_wait_ms must be in [0, 1000], got {cfg.ingest.group_wait_ms}"
        )
    return RiskService(
        cfg.ckpt_path,
        Store.open(cfg.store.url),
        clock=cfg.clock,
        explain=cfg.scoring.explain,
        explain_steps=cfg.scoring.explain_steps,
        batch_size=cfg.scoring.batch_size,
        limits=Limits(**cfg.limits),
        timestamp_format=cfg.scoring.timestamp_format,
        users_path=cfg.users_path,
        sweep_batch_users=cfg.sweep.batch_users,
        group_wait_s=cfg.ingest.group_wait_ms / 1000,
        store_reasons=cfg.ingest.store_reasons,
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
@exit_on_bad_input(lambda cfg: cfg.paths.output_dir)
def main(cfg: DictConfig) -> None:
    import uvicorn

    if cfg.scoring.threads:
        torch.set_num_threads(int(cfg.scoring.threads))
    service = build_service(cfg)
    stop = threading.Event()
    if cfg.sweep.interval_s > 0:
        threading.Thread(
            target=_sweeper, args=(service, cfg.sweep.interval_s, stop), daemon=True
        ).start()
    print(f"serving model {service.version} on http://{cfg.host}:{cfg.port}/", flush=True)
    try:
        uvicorn.run(create_app(service), host=cfg.host, port=cfg.port, log_level=cfg.log_level)
    finally:
        stop.set()


if __name__ == "__main__":
    run(main)
