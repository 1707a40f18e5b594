"""ID warm-up: the embedding of an ID never seen in training, generated from its attributes.

Pan et al., SIGIR 2019, "Warm Up Cold-start Advertisements: Improving CTR Predictions via
Learning to Learn ID Embeddings" (Meta-Embedding). ``model.id_warmup: {ID feature: [attribute
features]}`` gives the model's input encoder a generator g (:class:`msmt.layers.embedding.IdGenerator`)
that every row whose ID is out of vocabulary reads instead of the shared OOV row. After training,
with the base frozen, g is trained by treating IDs seen in training as new ones. Per step, for
each sampled ID with rows A and B (two disjoint batches of ``meta.warmup_rows``):

    e     = mean over A of g(attributes)                      (the cold-start embedding)
    L_cold = L(A; e)                                          (A scored as if the ID were new)
    e'    = e − η ∇_e L(A; e)                                 (one warm-up step, η = warmup_step_size)
    L_warm = L(B; e')
    L     = a · L_cold + (1 − a) · L_warm                     (a = meta.warmup_mix)

and only g's parameters move (the gradient of L_warm flows through the warm step into g).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from msmt.layers.embedding import FeatureEncoder
from msmt.meta.params import trainable_only
from msmt.spec.batch import Batch, take, to_device
from msmt.spec.config import MetaConfig
from msmt.spec.errors import ConfigError
from msmt.spec.fitted import OOV
from msmt.training.losses import model_losses, weighted_total
from msmt.training.optim import make_optimizer


def warmup_encoder(model: nn.Module) -> FeatureEncoder | None:
    """The model's one input encoder with ID generators (None: the model warms up no ID)."""
    found = [m for m in model.modules() if isinstance(m, FeatureEncoder) and m.generated]
    if len(found) > 1:
        raise ConfigError(f"model.id_warmup: model '{model.registry_name}' has {len(found)} input encoders; ID warm-up needs one")
    return found[0] if found else None


def _as_new(batch: Batch, field: int) -> Batch:
    """The rows with their ID replaced by the OOV index (scored as an unseen ID)."""
    sparse = batch["sparse"].clone()
    sparse[:, field] = OOV
    return {**batch, "sparse": sparse}


def _loss(model: nn.Module, batch: Batch) -> Tensor:
    return weighted_total(model.schema.spec.tasks, model_losses(model, batch))


def warm_up_ids(model: nn.Module, meta: MetaConfig, data: Batch, progress: bool = False) -> list[dict]:
    """Train the ID generators of ``model`` in place on the training rows ``data`` (base frozen).

    Returns one history row per 10% of the steps (mean cold and warm losses); [] when the model
    has no generator or ``meta.warmup_steps`` is 0.
    """
    encoder = warmup_encoder(model)
    if encoder is None or meta.warmup_steps == 0:
        return []
    device = next(model.parameters()).device
    generator_params = list(encoder.generators.parameters())
    generator_ids = {id(p) for p in generator_params}
    optimizer = make_optimizer(generator_params, "adam", meta.warmup_lr)
    rng = np.random.default_rng(meta.seed)
    k = meta.warmup_rows
    pools = {}
    for name, (field, _, _) in encoder.generated.items():
        ids = data["sparse"][:, field].numpy()
        order = np.argsort(ids, kind="stable")
        values, starts, counts = np.unique(ids[order], return_index=True, return_counts=True)
        keep = (values > OOV) & (counts >= 2 * k)
        pools[name] = (field, [order[s : s + c] for s, c, ok in zip(starts, counts, keep) if ok])
        if not pools[name][1]:
            raise ConfigError(f"model.id_warmup.{name}: no value has 2 × meta.warmup_rows = {2 * k} training rows")
    was_training = model.training
    model.eval()  # no dropout, no ID dropout: the base is what inference sees
    history, window = [], []
    every = max(1, meta.warmup_steps // 10)
    try:
        with trainable_only(model, [n for n, p in model.named_parameters() if id(p) in generator_ids]):  # the base frozen
            for step in range(1, meta.warmup_steps + 1):
                optimizer.zero_grad(set_to_none=True)
                cold_sum, warm_sum = 0.0, 0.0
                for name, (field, groups) in pools.items():
                    rows = rng.permutation(groups[rng.integers(len(groups))])
                    a = to_device(take(data, torch.from_numpy(rows[:k].copy())), device)
                    b = to_device(take(data, torch.from_numpy(rows[k : 2 * k].copy())), device)
                    a_new, b_new = _as_new(a, field), _as_new(b, field)
                    generated = encoder.generate_ids(encoder.table(a_new["sparse"] + encoder.offsets[: encoder.num_sparse]), a_new["sparse"], a_new)
                    e = generated[:, field].mean(0)  # [dim]: the ID's cold-start embedding
                    cold = _loss(model, {**a_new, f"warm.{name}": e.expand(k, -1)})
                    grad = torch.autograd.grad(cold, e, create_graph=True)[0]
                    warmed = e - meta.warmup_step_size * grad
                    warm = _loss(model, {**b_new, f"warm.{name}": warmed.expand(k, -1)})
                    (meta.warmup_mix * cold + (1 - meta.warmup_mix) * warm).backward()
                    cold_sum += float(cold.detach())
                    warm_sum += float(warm.detach())
                optimizer.step()
                window.append((cold_sum, warm_sum))
                if step % every == 0 or step == meta.warmup_steps:
                    cold_mean, warm_mean = (float(np.mean([w[i] for w in window])) for i in (0, 1))
                    history.append({"step": step, "cold_loss": cold_mean, "warm_loss": warm_mean})
                    if progress:
                        print(f"ID warm-up step {step}: cold {cold_mean:.4f} warm {warm_mean:.4f}")
                    window = []
    finally:
        model.train(was_training)
    return history
