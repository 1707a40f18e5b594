"""ESCM²: Entire Space Counterfactual Multi-task Model (Wang et al., SIGIR 2022, "ESCM²: Entire
Space Counterfactual Multi-Task Model for Post-Click Conversion Rate Estimation").

The network is ESMM's (:class:`~msmt.models.esmm.ESMM`: pCTR and pCVR towers over shared
embeddings, pCTCVR = pCTR · pCVR trained over all impressions). ESMM's CVR is biased upwards on
unclicked impressions; ESCM² adds a counterfactual risk regulariser on the CVR tower
(:meth:`extra_losses`), with o_n the click, r_n the conversion, p̂_n = pCTR_n as the propensity
(held constant, 1/p̂ capped at ``max_inverse_propensity``) and e_n = BCE(r_n, pCVR_n):

  ESCM²-IPS:  R = λ · 1/N Σ_n o_n e_n / p̂_n
  ESCM²-DR:   R = λ · 1/N Σ_n [ ê_n + o_n (e_n − ê_n) / p̂_n + o_n (e_n − ê_n)² / p̂_n ]
              with ê_n an imputation tower's estimate of e_n, trained by the last term

added to the CTR and CTCVR losses of the trainer. The funnel is the dataset's declaration: the
first task ``product_of: [click, cvr]`` with ``click`` a task (o) and ``cvr`` the CVR tower (an
auxiliary output or a task). Shapes as ESMM's; ``extra_losses`` -> {"counterfactual": scalar}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from msmt.layers import MLP
from msmt.models.esmm import ESMM
from msmt.models.registry import register
from msmt.spec.model_params import ESCM2Params


def counterfactual_funnel(spec) -> tuple[str, str, str] | None:
    """(product task, click task, CVR output) of the first two-factor product with a task first."""
    for t in spec.tasks:
        if len(t.product_of) == 2 and t.product_of[0] in spec.task_names:
            return t.name, t.product_of[0], t.product_of[1]
    return None


@register("escm2")
class ESCM2(ESMM):
    """ESMM + the counterfactual regulariser (``model.escm2.{counterfactual, weight, max_inverse_propensity}``)."""

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        p: ESCM2Params = self.params
        self.mode, self.weight, self.max_ips = p.counterfactual, p.weight, p.max_inverse_propensity
        self.funnel = counterfactual_funnel(schema.spec)
        if self.mode == "dr":  # ê_n, the imputed CVR error
            self.imputation = MLP(self.encoder.out_dim, [*cfg.hidden_dims, *cfg.tower_dims], 1, cfg.activation, cfg.dropout)

    def regulariser(self, click: Tensor, conversion: Tensor, ctr_logit: Tensor, cvr_logit: Tensor, imputed: Tensor | None = None) -> Tensor:
        """R of the module docstring from [B] clicks o, conversions r, and the logits of pCTR and pCVR."""
        inverse = torch.sigmoid(ctr_logit.detach()).reciprocal().clamp_max(self.max_ips)  # 1/p̂, a constant
        error = F.binary_cross_entropy_with_logits(cvr_logit, conversion, reduction="none")  # e_n
        if imputed is None:
            risk = click * error * inverse
        else:
            gap = error - imputed
            risk = imputed + click * gap * inverse + click * gap.square() * inverse
        return self.weight * risk.mean()

    def extra_losses(self, batch, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.funnel is None or self.weight == 0:
            return {}
        product, click, cvr = self.funnel
        names = self.task_names
        labels = batch["labels"]
        emb = self.encoder(batch)
        cvr_logit = outputs[cvr] if cvr in outputs else self.towers[cvr](emb).squeeze(-1)
        imputed = self.imputation(emb).squeeze(-1) if self.mode == "dr" else None
        o, r = labels[:, names.index(click)], labels[:, names.index(product)]  # r = o · conversion
        if "task_mask" in batch:  # rows where the funnel does not exist carry no click
            o = o * batch["task_mask"][:, names.index(product)]
        return {"counterfactual": self.regulariser(o, r, outputs[click], cvr_logit, imputed)}
