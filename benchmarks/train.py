"""Training throughput: sequences/s of one epoch per model, max_len and batching.

    python benchmarks/train.py [--models logistic lstm transformer] [--max-len 64 256 1024]
                               [--rows 8192] [--budget-s 15] [--device cpu] [--no-readme]

Two length distributions, each capped at max_len: CDNOW's own (the lengths of the shipped
log's training snapshots) and a long-tailed clickstream-like one (lognormal, median 20,
99th percentile 1,000). For each, `rows` snapshots with random event types and channels
(a model's speed does not depend on what they mean) are trained for one epoch (forward,
hazard loss, backward, AdamW step) with
- bucketed: the project's BucketBatchSampler, batches of similar length padded to their
  longest event sequence;
- pad-to-max: the same rows in random batches padded to max_len, as a fixed-shape pipeline
  would.
An epoch stops after `budget_s` seconds; batches come in random order either way, so the
rows/s of the part timed is that of the epoch (the table says which share ran). Before
timing, the untrained model's predictions on the first rows are compared between the two
(eval mode, within 1e-5), and the profiler names the attention kernel the Transformer ran.
Results go to benchmarks/results/train.json and to the README (perf-train markers).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from report import (
    README,
    RESULTS,
    ROOT,
    check_markers,
    cpu_note,
    performance_markers,
    write_section,
)
from seqchurn.data.batches import make_loader
from seqchurn.data.sequences import EVENT_TYPE, MASK, NUMERIC, SnapshotDataset
from seqchurn.data.sequences import OBSERVED, TAU_BIN, Y
from seqchurn.losses import hazard_nll
from seqchurn.module import ChurnModule

BIN_EDGES = [0, 30, 60, 90, 180, 365]
N_TYPES, N_NUMERIC, N_SUMMARY = 8, 4, 12
MODELS = ("logistic", "lstm", "transformer")


def encoder_kwargs(model: str) -> dict:
    """The encoder sizes of conf/model/<model>.yaml, the ones `train.py model=<model>` uses."""
    return dict(
        yaml.safe_load((ROOT / "conf" / "model" / f"{model}.yaml").read_text())["encoder_kwargs"]
    )


def cdnow_lengths() -> np.ndarray:
    """Event counts of the shipped CDNOW log's training snapshots (max_len 1024)."""
    from seqchurn.datamodule import ChurnDataModule

    dm = ChurnDataModule(source="cdnow", max_len=1024)
    dm.setup("fit")
    return dm.dataset("train").lengths


def clickstream_lengths(n: int, seed: int = 0) -> np.ndarray:
    """Lognormal lengths with median 20 and 99th percentile 1,000."""
    sigma = np.log(1000 / 20) / 2.3263
    return np.maximum(1, np.round(np.random.default_rng(seed).lognormal(np.log(20), sigma, n)))


def synthetic_dataset(lengths: np.ndarray, seed: int = 0) -> SnapshotDataset:
    gen = torch.Generator().manual_seed(seed)
    n, total = len(lengths), int(lengths.sum())
    offsets = torch.zeros(n + 1, dtype=torch.long)
    offsets[1:] = torch.as_tensor(lengths, dtype=torch.long).cumsum(0)
    labels = {
        Y: torch.randint(0, 2, (n,), generator=gen).float(),
        TAU_BIN: torch.randint(0, len(BIN_EDGES) + 1, (n,), generator=gen),
        OBSERVED: torch.rand(n, generator=gen) < 0.7,
        "tau": torch.rand(n, generator=gen) * 365,
    }
    return SnapshotDataset(
        event_type=torch.randint(2, N_TYPES, (total,), generator=gen),
        numeric=torch.randn(total, N_NUMERIC, generator=gen),
        offsets=offsets,
        summary=torch.randn(n, N_SUMMARY, generator=gen),
        static=torch.zeros(n, 0, dtype=torch.long),
        user_id=np.arange(n).astype(str).astype(object),
        cutoff=torch.zeros(n, dtype=torch.long),
        labels=labels,
    )


def padded_to(batch: dict, max_len: int) -> dict:
    """The batch with its event axis padded to max_len (masked, so the model ignores it)."""
    extra = max_len - batch[MASK].shape[1]
    out = dict(batch)
    out[EVENT_TYPE] = F.pad(batch[EVENT_TYPE], (0, extra))
    out[MASK] = F.pad(batch[MASK], (0, extra))
    out[NUMERIC] = F.pad(batch[NUMERIC], (0, 0, 0, extra))
    return out


def batches(ds: SnapshotDataset, mode: str, max_len: int, batch_size: int, seed: int):
    if mode == "bucketed":
        yield from make_loader(ds, batch_size, shuffle=True, seed=seed)
        return
    order = np.random.default_rng(seed).permutation(len(ds))
    for i in range(0, len(ds), batch_size):
        yield padded_to(ds[order[i : i + batch_size]], max_len)


def build(model: str, device: str, seed: int = 0) -> ChurnModule:
    torch.manual_seed(seed)
    return ChurnModule(
        encoder=model,
        bin_edges=BIN_EDGES,
        n_event_types=N_TYPES,
        n_numeric=N_NUMERIC,
        n_summary=N_SUMMARY,
        encoder_kwargs=encoder_kwargs(model),
    ).to(device)


def to_device(batch: dict, device: str) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def max_gap(model: ChurnModule, ds: SnapshotDataset, max_len: int, device: str) -> float:
    """Largest |logit difference| between a batch as bucketed and padded to max_len."""
    model.eval()
    with torch.no_grad():
        batch = to_device(ds[np.arange(min(256, len(ds)))], device)
        gap = (model(batch) - model(padded_to(batch, max_len))).abs().max().item()
    model.train()
    return gap


def attention_kernel(model: ChurnModule, ds: SnapshotDataset, device: str) -> str:
    """The scaled-dot-product kernel(s) the profiler saw in one training step."""
    batch = to_device(ds[np.arange(min(64, len(ds)))], device)
    with torch.profiler.profile() as prof:
        model(batch)[:, 0].sum().backward()
    model.zero_grad()
    names = {e.name for e in prof.events() if "scaled_dot_product" in e.name}
    kernels = sorted(n.removeprefix("aten::") for n in names if "backward" not in n)
    return ", ".join(k for k in kernels if k != "scaled_dot_product_attention") or "none"


def epoch(model, ds, mode, max_len, batch_size, budget_s, device) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rows, tokens, padded, started = 0, 0, 0, time.perf_counter()
    for batch in batches(ds, mode, max_len, batch_size, seed=1):
        batch = to_device(batch, device)
        logits = model(batch)
        loss = hazard_nll(logits, batch[TAU_BIN], batch[OBSERVED])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rows += len(logits)
        tokens += int(batch[MASK].sum())
        padded += batch[MASK].numel()
        if time.perf_counter() - started > budget_s:
            break
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {
        "rows_per_s": rows / seconds,
        "share_timed": rows / len(ds),
        "padding_share": 1 - tokens / max(padded, 1),
        "seconds": seconds,
    }


def measure(args: argparse.Namespace) -> list[dict]:
    rng = np.random.default_rng(0)
    sources = {
        "CDNOW": rng.choice(cdnow_lengths(), size=args.rows),
        "clickstream": clickstream_lengths(args.rows),
    }
    results = []
    for dist, raw_lengths in sources.items():
        for max_len in args.max_len:
            ds = synthetic_dataset(np.minimum(raw_lengths, max_len).astype(np.int64))
            for model_name in args.models:
                model = build(model_name, args.device)
                gap = max_gap(model, ds, max_len, args.device)
                kernel = "packed sequences" if model_name == "lstm" else "-"
                if model_name == "transformer":
                    kernel = attention_kernel(model, ds, args.device)
                runs = {}
                for mode in ("bucketed", "pad-to-max"):
                    runs[mode] = epoch(
                        build(model_name, args.device), ds, mode, max_len,
                        args.batch_size, args.budget_s, args.device,
                    )  # fmt: skip
                res = {
                    "lengths": dist,
                    "max_len": max_len,
                    "mean_len": float(ds.lengths.mean()),
                    "model": model_name,
                    "path": kernel,
                    "max_abs_logit_gap": gap,
                    **{f"{m}_{k}": v for m, r in runs.items() for k, v in r.items()},
                }
                res["speedup"] = res["bucketed_rows_per_s"] / res["pad-to-max_rows_per_s"]
                print(json.dumps(res), flush=True)
                results.append(res)
    return results


def render(results: list[dict], settings: dict) -> tuple[str, list[str], list[list[str]]]:
    """The README lead, header and rows of measured `results`."""
    header = ["lengths", "max_len", "mean length", "model", "path"]
    header += ["bucketed seq/s", "pad-to-max seq/s", "speed-up", "padding (bucketed / max)"]
    header += ["share of epoch timed", "max logit gap, bucketed vs padded"]
    rows = [
        [
            r["lengths"],
            str(r["max_len"]),
            f"{r['mean_len']:.1f}",
            r["model"],
            r["path"],
            f"{r['bucketed_rows_per_s']:,.0f}",
            f"{r['pad-to-max_rows_per_s']:,.0f}",
            f"{r['speedup']:.2f}x",
            f"{r['bucketed_padding_share']:.0%} / {r['pad-to-max_padding_share']:.0%}",
            f"{r['bucketed_share_timed']:.0%} / {r['pad-to-max_share_timed']:.0%}",
            f"{r['max_abs_logit_gap']:.1e}",
        ]
        for r in results
    ]
    lead = (
        f"Training (`python benchmarks/train.py`, device {settings['device']}, "
        f"{settings['machine']}): sequences/s of one epoch of {settings['rows']:,} snapshots, "
        f"batch {settings['batch_size']}, each epoch cut at {settings['budget_s']:.0f} s "
        "(share timed: bucketed / pad-to-max); `path` is the attention kernel the profiler "
        "saw, or packed sequences for the LSTM."
    )
    return lead, header, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--max-len", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--budget-s", type=float, default=15.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument(
        "--from-results", action="store_true", help="rewrite the README from train.json only"
    )
    args = parser.parse_args()
    if not args.no_readme:
        check_markers(README, performance_markers("train"))
    out = RESULTS / "train.json"
    if args.from_results:
        saved = json.loads(out.read_text())
        settings, results = saved["settings"], saved["runs"]
    else:
        results = measure(args)
        settings = {**vars(args), "machine": cpu_note()}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"settings": settings, "runs": results}, indent=2))
    lead, header, rows = render(results, settings)
    if not args.no_readme:
        write_section("train", lead, header, rows)
    print(lead)


if __name__ == "__main__":
    main()
