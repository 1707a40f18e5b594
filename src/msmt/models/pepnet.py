"""PEPNet: Parameter and Embedding Personalized Network (Chang et al., KDD 2023).

network, as in the paper's figure (Gate NU: δ = γ·σ(W₂ ReLU(W₁ x + b₁) + b₂), γ = 2):
  e    = emb(features) ⊕ dense                                     [B, D]
  EPNet: e' = e ⊙ GateNU_ep(e_scenario ⊕ stop_grad(e))             [B, D]
         e_scenario: the row's own scenario (its attributes, or its id embedding)
  PPNet: per task t a tower over e'; the input of each of its layers l is scaled,
         h' = h ⊙ δ_t^l,  [δ_1^l .. δ_T^l] = GateNU_l(e_prior ⊕ stop_grad(e'))   [B, T, d_l]
         e_prior: the persona prior (``model.pepnet.prior_features``: user, item, author ids)
  out_t = the tower's last linear unit: a logit / log-rate / value      {task: [B]}
The towers use ``model.hidden_dims + model.tower_dims``. Every row's gate reads only its own
scenario's features: there is no loop over scenarios whose last iteration could overwrite the
others (the "only the last domain's output" bug of one library).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msmt.layers import FeatureEncoder, activation
from msmt.layers.gate_nu import GateNU
from msmt.layers.scenario_knowledge import ScenarioEmbedding
from msmt.models.base import MultiTaskModel
from msmt.models.registry import register
from msmt.spec.model_params import PEPNetParams


@register("pepnet")
class PEPNet(MultiTaskModel):
    """Input: a Batch; output: {task: [B]}."""

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        p: PEPNetParams = self.params
        self.encoder = FeatureEncoder.for_model(schema, cfg)
        d_in = self.encoder.out_dim
        fields, dense = self.encoder.select(p.prior_features, "model.pepnet.prior_features") if p.prior_features else (
            [i for i, n in enumerate(self.encoder.field_names) if n != "<scenario id>"], [])
        self.register_buffer("prior_fields", torch.tensor(fields, dtype=torch.long), persistent=False)
        self.register_buffer("prior_dense", torch.tensor(dense, dtype=torch.long), persistent=False)
        prior_dim = cfg.embedding_dim * len(fields) + len(dense)
        self.scenario = ScenarioEmbedding(schema, cfg.embedding_dim)
        self.epnet = GateNU(self.scenario.out_dim + d_in, d_in, p.gate_hidden, p.gamma) if p.use_epnet else None
        sizes = [d_in, *cfg.hidden_dims, *cfg.tower_dims]
        T = self.num_tasks
        self.ppnet = nn.ModuleList(GateNU(prior_dim + d_in, T * d, p.gate_hidden, p.gamma) for d in sizes) if p.use_ppnet else None
        # the towers' layers, all tasks stacked: weight [T, d_l, d_{l+1}], bias [T, 1, d_{l+1}]
        layers = [nn.ModuleList(nn.Linear(a, b) for _ in range(T)) for a, b in zip(sizes, [*sizes[1:], 1])]
        self.tower_weights = nn.ParameterList(nn.Parameter(torch.stack([m.weight.t() for m in layer])) for layer in layers)
        self.tower_biases = nn.ParameterList(nn.Parameter(torch.stack([m.bias[None] for m in layer])) for layer in layers)
        self.act = activation(cfg.activation)
        self.dropout = nn.Dropout(cfg.dropout)

    def domain_gate(self, batch, e: Tensor) -> Tensor:
        """EPNet's δ_domain [B, D] from the row's own scenario and the (stopped) embeddings."""
        return self.epnet(torch.cat([self.scenario(batch), e.detach()], dim=1))

    def task_gates(self, batch, fields: Tensor, e_prime: Tensor) -> list[Tensor]:
        """PPNet's δ per tower layer: [B, T, d_l] from the persona prior and the (stopped) e'."""
        prior = torch.cat([fields.index_select(1, self.prior_fields).flatten(1), batch["dense"].index_select(1, self.prior_dense)], 1)
        x = torch.cat([prior, e_prime.detach()], dim=1)
        return [gate(x).view(x.shape[0], self.num_tasks, -1) for gate in self.ppnet]

    def network(self, batch) -> dict[str, Tensor]:
        fields = self.encoder.embed_fields(batch)  # [B, F, d]
        e = self.encoder.flatten(batch, fields)  # [B, D]
        e_prime = e * self.domain_gate(batch, e) if self.epnet is not None else e
        gates = self.task_gates(batch, fields, e_prime) if self.ppnet is not None else None
        h = e_prime.unsqueeze(0).expand(self.num_tasks, -1, -1)  # [T, B, D]: one tower per task
        last = len(self.tower_weights) - 1
        for i, (w, b) in enumerate(zip(self.tower_weights, self.tower_biases)):
            if gates is not None:
                h = h * gates[i].transpose(0, 1)  # h' = h ⊙ δ_t^l
            h = torch.baddbmm(b, h, w)  # [T, B, d_{l+1}]
            if i < last:
                h = self.dropout(self.act(h))
        return {t: h[i, :, 0] for i, t in enumerate(self.task_names)}

    def personal_parameters(self) -> list[str]:
        """The towers' output layer (every task's last linear layer, stacked)."""
        last = len(self.tower_weights) - 1
        return [f"tower_weights.{last}", f"tower_biases.{last}"]

    def shared_parameters(self) -> list[nn.Parameter]:
        """Embeddings, the scenario input and the gates: every task's tower reads them."""
        mods = [self.encoder, self.scenario, *([self.epnet] if self.epnet is not None else []), *(self.ppnet or [])]
        return [q for m in mods for q in m.parameters()]

    def last_shared_layer(self) -> nn.Module | None:
        """EPNet's output layer: e' = e ⊙ δ feeds every tower."""
        return self.epnet.out if self.epnet is not None else self.encoder
