"""The benchmark protocol (protocol.yaml) as plain values, and the Hydra configs of its runs."""

from __future__ import annotations

from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

# A sibling in benchmarks/: Python puts a script's own folder first on its path.
from report import ROOT

PROTOCOL = Path(__file__).resolve().parent / "protocol.yaml"


def merge_overrides(*lists: list[str]) -> list[str]:
    """Hydra overrides of several lists in order, a later value of a key replacing an earlier one.

    Hydra refuses a key given twice, and quick mode appends to the full protocol's lists.
    """
    merged: dict[str, str] = {}
    for overrides in lists:
        for item in overrides:
            key = item.split("=", 1)[0].lstrip("+~")
            merged.pop(key, None)  # re-inserted, so the order is that of the last values
            merged[key] = item
    return list(merged.values())


def load_protocol(quick: bool, path: Path = PROTOCOL) -> dict:
    """The protocol of `path`, with quick mode's settings applied when `quick`.

    Returns:
        models, seeds, draws, overrides (every run), references (reference -> metrics),
        fairness, datasets (name, group, overrides, and `path`: the absolute path of a
        dataset's file outside the repository, given relative to it, passed as data.path),
        studies (key -> title, datasets, seeds, arms, compare; quick: its datasets, seed 0)
        and ablations (title, variants of name and overrides, each merged with the
        ablations' shared overrides).
    """
    spec = yaml.safe_load(Path(path).read_text())
    quick_spec = spec["quick"] if quick else {}
    datasets = spec["datasets"]
    if quick:
        datasets = [d for d in datasets if d["name"] in quick_spec["datasets"]]
    extra = quick_spec.get("dataset_overrides", {})
    studies = {}
    for key, study in spec.get("studies", {}).items():
        names = study["datasets"]
        if quick:
            names = [n for n in names if n in quick_spec["studies"]["datasets"]]
        studies[key] = {
            **study,
            "datasets": names,
            "seeds": list(quick_spec["studies"]["seeds"] if quick else study["seeds"]),
        }
    ablations = spec["ablations"]
    variants = ablations["variants"][: quick_spec.get("ablations")]
    return {
        "models": list(spec["models"]),
        "seeds": list(quick_spec.get("seeds", spec["seeds"])),
        "draws": int(quick_spec.get("draws", spec["draws"])),
        "overrides": merge_overrides(spec["overrides"], quick_spec.get("overrides", [])),
        "references": {k: tuple(v) for k, v in spec["references"].items()},
        "fairness": dict(spec["fairness"]),
        "datasets": [_dataset(d, extra.get(d["name"], [])) for d in datasets],
        "studies": studies,
        "ablations": {
            "title": ablations["title"],
            "variants": [
                {
                    "name": v["name"],
                    "overrides": merge_overrides(
                        ablations["overrides"],
                        quick_spec.get("ablation_overrides", []),
                        v["overrides"],
                    ),
                }
                for v in variants
            ],
        },
    }


def _dataset(spec: dict, extra: list[str]) -> dict:
    out = {**spec, "overrides": merge_overrides(spec["overrides"], extra)}
    if "path" in spec:  # relative to the repository, not to wherever the runner starts
        out["path"] = str((ROOT / spec["path"]).resolve())
        out["overrides"] = merge_overrides(out["overrides"], [f"data.path={out['path']}"])
    return out


def compose_cfg(overrides: list[str], out_dir: Path) -> DictConfig:
    """conf/train.yaml with `overrides`, its run paths in `out_dir` and no logger."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        cfg.paths.log_dir = str(out_dir)
        cfg.logger = None
    return cfg
