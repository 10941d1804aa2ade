"""The Transformer's forward pass and hazard head on prebuilt tensors, on a CUDA GPU in bf16.

    PYTHONPATH=src python benchmarks/gpu.py [--users 100000] [--length 256] [--batch 8192]

The performance issue's GPU goal: >= 100,000 users/s for 100,000 users at length 256 on an
H100/H200-class card, bf16 autocast. The model is the default Transformer
(conf/model/transformer.yaml) with its initial weights; the inputs are random tensors of
its shapes, every user at the full length (the padded batch's worst case), put on the
device before the clock starts, so the figure is the model's alone. The first `--check`
users are scored again on the CPU in float32, and the largest difference in the churn
probability is reported (goal: within 1e-3).

It needs only torch, numpy, PyYAML and this repo's src/ (no Hydra, no Lightning, no data
files), since the device machine reaches no package registry. Without CUDA it runs the same
steps on the CPU (bf16 autocast there), which the test suite uses, and says the GPU was not
measured. Results go to benchmarks/results/gpu.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from seqchurn.data.feature_table import SEQUENCE_CHANNELS, summary_table
from seqchurn.data.labels import DEFAULT_BIN_EDGES
from seqchurn.data.sequences import EVENT_TYPE, MASK, NUMERIC, STATIC, SUMMARY
from seqchurn.models import HazardHead, InputSizes, build_encoder
from seqchurn.models.heads import p_churn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
TYPES = ["view", "cart", "purchase", "refund"]
GOAL_USERS_PER_S, GOAL_GAP = 100_000, 1e-3  # on an H100/H200-class GPU


def build_model(seed: int = 0) -> torch.nn.Module:
    """The default Transformer and its hazard head, as training builds them (initial weights)."""
    config = yaml.safe_load((ROOT / "conf" / "model" / "transformer.yaml").read_text())
    sizes = InputSizes(
        n_event_types=len(TYPES) + 2,
        n_numeric=len(SEQUENCE_CHANNELS),
        n_summary=len(summary_table(TYPES)),
    )
    torch.manual_seed(seed)
    encoder = build_encoder(config["encoder"], sizes, **config["encoder_kwargs"])
    head = HazardHead(encoder.out_dim, len(DEFAULT_BIN_EDGES) + 1)
    return torch.nn.Sequential(encoder, head)  # batch dict -> user vector -> hazard logits


def make_inputs(users: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of the model's shapes, every user at the full length."""
    gen = torch.Generator().manual_seed(seed)
    return {
        EVENT_TYPE: torch.randint(2, len(TYPES) + 2, (users, length), generator=gen),
        NUMERIC: torch.randn(users, length, len(SEQUENCE_CHANNELS), generator=gen),
        MASK: torch.ones(users, length, dtype=torch.bool),
        SUMMARY: torch.randn(users, len(summary_table(TYPES)), generator=gen),
        STATIC: torch.zeros(users, 0, dtype=torch.long),
    }


def score(model, inputs: dict, batch: int, device: torch.device, bf16: bool) -> torch.Tensor:
    """Churn probabilities of every user, `batch` users per forward pass."""
    out = []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    with torch.inference_mode(), autocast:
        for start in range(0, len(inputs[MASK]), batch):
            part = {k: v[start : start + batch] for k, v in inputs.items()}
            out.append(p_churn(model(part).float()))
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--check", type=int, default=2048, help="users also scored on the CPU")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "gpu.json"))
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model().eval()
    inputs = make_inputs(args.users, args.length)
    first = {k: v[: args.check] for k, v in inputs.items()}
    reference = score(model, first, args.batch, torch.device("cpu"), bf16=False)
    model.to(device)
    on_device = {k: v.to(device) for k, v in inputs.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    score(model, {k: v[: args.batch] for k, v in on_device.items()}, args.batch, device, True)
    times = []
    for _ in range(args.repeats):
        sync()
        start = time.perf_counter()
        p = score(model, on_device, args.batch, device, bf16=True)
        sync()
        times.append(time.perf_counter() - start)
    gap = float((p[: args.check].cpu() - reference).abs().max())
    best = min(times)
    result = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "gpu_measured": device.type == "cuda",
        "torch": torch.__version__,
        "users": args.users,
        "length": args.length,
        "batch": args.batch,
        "seconds": times,
        "users_per_s": args.users / best,
        "goal_users_per_s": GOAL_USERS_PER_S,
        "checked_users": min(args.check, args.users),
        "max_abs_p_gap_vs_cpu_fp32": gap,
        "attention": "scaled_dot_product_attention (nn.TransformerEncoder, fast path off)",
        "finite": bool(np.isfinite(p.cpu().numpy()).all()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    result["goals_met"] = bool(result["users_per_s"] >= GOAL_USERS_PER_S and gap <= GOAL_GAP)
    where = "" if device.type == "cuda" else " (no CUDA: the GPU was not measured)"
    print(
        f"{result['device']}{where}: {result['users_per_s']:,.0f} users/s "
        f"({args.users:,} users x {args.length} events, bf16, batch {args.batch}; goal "
        f"{GOAL_USERS_PER_S:,}); largest |p gap| vs CPU float32 on "
        f"{result['checked_users']:,} users: {gap:.1e} (goal {GOAL_GAP:g}); "
        f"goals {'met' if result['goals_met'] else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
