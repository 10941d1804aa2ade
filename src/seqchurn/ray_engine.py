"""predict on a Ray cluster: one task per shard of users, one output file (engine=ray).

Each task runs `scored_chunks` on its shard (`scoring.shard` i/n, a stable hash of the user
id) and returns its rows as an Arrow table through the object store; the driver writes the
tables in shard order through the same atomic writer as a single process. Workers read the
log and the checkpoint by path, so on a multi-machine cluster both must be on storage every
node sees. Ray is an optional extra (`pip install -e ".[scale]"`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping

import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from seqchurn.data.labels import to_date
from seqchurn.errors import DataError, check_settings
from seqchurn.inference import load_model, scored_chunks, scoring_cutoff, write_predictions
from seqchurn.io import check_outputs


def _score_shard(ckpt_path: str, data: Mapping, shard: str, scoring: Mapping) -> pa.Table | None:
    chunks, _ = scored_chunks(ckpt_path=ckpt_path, data=data, shard=shard, **scoring)
    tables = [pa.Table.from_pandas(frame, preserve_index=False) for frame in chunks]
    return pa.concat_tables(tables, promote_options="default") if tables else None


def predict_log_ray(
    *,
    ckpt_path: str | Path,
    data: Mapping,
    output: str | Path,
    shards: int = 4,
    address: str | None = None,
    cpus_per_shard: float = 1,
    gpus_per_shard: float = 0,
    **scoring,
) -> dict:
    """`inference.predict_log` with its users split over `shards` Ray tasks.

    `address` None starts a local Ray (or joins the one this process already runs); "auto"
    or "ray://host:10001" joins a cluster. `gpus_per_shard` > 0 places each task on a GPU
    (with scoring.accelerator=gpu). The file holds the same rows as a single-process run,
    grouped by shard.
    """
    try:
        import ray
    except ImportError as err:
        raise DataError('engine=ray needs Ray: pip install -e ".[scale]"') from err
    check_settings({"shards": shards}, positive_int=True, prefix="ray.")
    if scoring.get("shard") is not None:
        raise DataError("engine=ray splits the users itself; leave scoring.shard unset")
    check_outputs([output], [data.get("path"), data.get("users_path"), ckpt_path])
    # A bad checkpoint or cutoff fails here, before any cluster starts.
    cutoff = scoring_cutoff(load_model(ckpt_path).preprocessing, scoring.get("cutoff"))
    scoring = {**{k: v for k, v in scoring.items() if k != "shard"}, "progress": False}
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=cpus_per_shard, num_gpus=gpus_per_shard)(_score_shard)
        refs = [
            task.remote(str(ckpt_path), dict(data), f"{i}/{shards}", scoring) for i in range(shards)
        ]
        rows = write_predictions(_gathered(ray, refs), output)
    finally:
        if started_here:
            ray.shutdown()
    return {"rows": rows, "output": str(output), "cutoff": to_date(cutoff)}


def _gathered(ray, refs: list) -> Iterator[pd.DataFrame]:
    """The shards' tables in shard order; a task's DataError is raised here as itself."""
    for ref in tqdm(refs, desc="shards", unit="shard"):
        try:
            table = ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, DataError):
                raise DataError(str(err.cause)) from None
            raise
        if table is not None:
            yield table.to_pandas()
