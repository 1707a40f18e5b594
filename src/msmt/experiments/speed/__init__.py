"""The msmt side of the speed benchmark (``benchmarks/speed.py``, docs/speed.md).

* :mod:`.data`: the seeded synthetic click/purchase world, already encoded as a batch;
* :mod:`.models`: the benchmark's model sizes, msmt's training step, training, AUC and the
  exported / compiled scorers;
* :mod:`.levers`: measured-but-not-adopted variants (previous expert layouts, two embedding
  lookups, out-of-place ReLU, sparse gradients, ``torch.compile``);
* :mod:`.limit`: training FLOPs per sample, this CPU's GEMM rate at a model's shapes, profiles;
* :mod:`.timing`: samples/s of a step over batches, with and without the loader in the loop.

torch-rechub's side stays in the script (an optional dependency: ``pip install '.[bench]'``).
"""
