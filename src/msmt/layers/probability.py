"""Numerically stable probability algebra on logits (for ESMM's pCTCVR = pCTR x pCVR).

A product of probabilities is composed in log space, log p = sum_k log sigma(a_k), and turned
back into a logit, logit(p) = log p - log(1 - p), with ``log1mexp`` so that a loss computed with
``binary_cross_entropy_with_logits`` on the result is exactly BCE on the product (Ma et al.,
SIGIR 2018, Eq. 3) without ever forming 1 - p in linear space.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_LOG_HALF = -math.log(2.0)
# log p is kept at most this far below 0, i.e. p <= 1 - 1e-7 (the float32 resolution near 1);
# without it a product of two saturated sigmoids would give logit = +inf.
_MAX_LOG_P = -1e-7


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, accurate over the whole range (Maechler's two branches).

    Near 0 the branch is log(-expm1(x)), written through the exact identity
    1 - eˣ = 2u / (1 + u) with u = tanh(-x/2) ∈ (0, 1/3): log 2 + log u - log1p(u). tanh keeps full
    relative precision near 0, so this is as accurate as expm1, and it exports to ONNX, which
    has no Expm1 (an ESMM with a declared product must export, ``msmt export``).
    """
    u = torch.tanh(-0.5 * x)
    near_zero = math.log(2.0) + torch.log(u) - torch.log1p(u)
    return torch.where(x > _LOG_HALF, near_zero, torch.log1p(-torch.exp(x)))


def product_log_prob(logits: Tensor) -> Tensor:
    """[B, K] logits a_k -> [B] log prod_k sigmoid(a_k) = sum_k logsigmoid(a_k)."""
    return F.logsigmoid(logits).sum(-1)


def logit_from_log_prob(log_p: Tensor) -> Tensor:
    """[B] log p -> [B] logit(p) = log p - log(1 - p)."""
    log_p = log_p.clamp_max(_MAX_LOG_P)
    return log_p - log1mexp(log_p)


def product_logit(logits: Tensor) -> Tensor:
    """[B, K] factor logits -> [B] logit of the product of their probabilities."""
    return logit_from_log_prob(product_log_prob(logits))


def quotient_logit(logit: Tensor, divisor_logits: Tensor) -> Tensor:
    """[B] logit of p, [B, K] logits of q_k -> [B] logit of p / Π_k q_k, capped below 1 (the
    probability of the remaining factor of a product p = Π_k q_k · r, e.g. pCVR = pCTCVR / pCTR
    from a model that predicts pCTCVR and pCTR directly)."""
    return logit_from_log_prob(F.logsigmoid(logit) - F.logsigmoid(divisor_logits).sum(-1))
