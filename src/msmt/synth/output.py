"""What every synthetic generator shares: the logistic link and writing a dataset folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from msmt.data.io import atomic_write_text, write_table


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def write_time_split(frame: pd.DataFrame, out_dir: str | Path, dataset: dict, experiment: dict) -> Path:
    """Rows already in time order -> train/validation/test CSVs (80/10/10), dataset.yaml, experiment.yaml."""
    out = Path(out_dir)
    cut1, cut2 = int(len(frame) * 0.8), int(len(frame) * 0.9)
    write_table(frame.iloc[:cut1], out / "train.csv")
    write_table(frame.iloc[cut1:cut2], out / "validation.csv")
    write_table(frame.iloc[cut2:], out / "test.csv")
    atomic_write_text(out / "dataset.yaml", yaml.safe_dump(dataset, sort_keys=False))
    atomic_write_text(out / "experiment.yaml", yaml.safe_dump(experiment, sort_keys=False))
    return out
