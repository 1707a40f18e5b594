"""Dense vs sparse embedding gradients: time per training step as the table grows.

    python benchmarks/sparse_embeddings.py [--steps 60] [--batch 512]

A ``shared_bottom`` model on the synthetic ``simple`` data with ``user_id`` hashed into B
buckets; each step is forward, backward and the optimiser update(s) built by
:func:`msmt.training.optim.build_optimizers` (AdamW, or AdamW + SparseAdam for the tables). Runs
alternate between the two modes so that load on a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from msmt.data.fit import fit_schema
from msmt.data.loading import read_data
from msmt.data.tensorize import encode_frame
from msmt.models import build_model
from msmt.spec.batch import iterate_batches
from msmt.spec.config import load_experiment
from msmt.synth.simple import write_simple
from msmt.training.losses import build_balancer, task_losses
from msmt.training.optim import build_optimizers


def time_steps(cfg, schema, data, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model(schema, cfg.model)
    balancer = build_balancer(cfg.dataset.tasks, cfg.loss, model)
    opts = build_optimizers(model, [], cfg.train, distributed=False)
    batches = list(iterate_batches(data, cfg.train.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)))
    start = time.perf_counter()
    for i in range(steps):
        batch = batches[i % len(batches)]
        losses = task_losses(cfg.dataset.tasks, model(batch), batch["labels"], batch["weight"])
        for o in opts:
            o.zero_grad(set_to_none=True)
        balancer.backward(losses)
        for o in opts:
            o.step()
    return (time.perf_counter() - start) / steps * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = write_simple(Path(tempfile.mkdtemp(prefix="msmt-sparse-")), rows=20000)
    print("| hash buckets (user_id) | dense AdamW (ms/step) | sparse + SparseAdam (ms/step) | speed-up |\n|---|---|---|---|")
    for buckets in (1 << 12, 1 << 16, 1 << 20):
        times = {False: [], True: []}
        for _ in range(args.repeats):
            for sparse in (False, True):
                sets = [f"dataset.features.hash_buckets={buckets}", f"train.sparse_embeddings={str(sparse).lower()}",
                        f"train.batch_size={args.batch}", "model.name=shared_bottom"]
                cfg = load_experiment(d / "experiment.yaml", sets)
                train = read_data(cfg.dataset.files.train, cfg.dataset)
                schema = fit_schema(train, cfg.dataset)
                times[sparse].append(time_steps(cfg, schema, encode_frame(train, schema), args.steps))
        dense, sparse = statistics.median(times[False]), statistics.median(times[True])
        print(f"| {buckets:,} | {dense:.1f} | {sparse:.1f} | {dense / sparse:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
