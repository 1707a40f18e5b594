"""M2M: multi-scenario multi-task meta learning (Zhang et al., WSDM 2022, "Leaving No One Behind").

network, as in the paper's figure (MODELS.md):
  F  = emb(features) ⊕ pool(MH(X_b)) ⊕ pool(MH(X_p))                 [B, D]   (panel part optional)
  E  = expert views: E_j = MLP_j(F), j = 1..k                         [B, k, E]
  T  = task views: T_t = MLP(task_embedding_t)                        [m, E]
  S̃  = MLP(scenario attributes ⊕ advertiser profile)                  [B, s]
  R  = meta attention: R_t = Σ_j softmax_j(vᵀ Meta([E_j ⊕ T_t]; S̃)) E_j   [B, m, E]
  H  = meta tower: hˡ = σ(Metaˡ_t(hˡ⁻¹; S̃)) + hˡ⁻¹                     [B, m, E]
  out_t = Tower_t(h_t) (``model.tower_dims``; empty: the paper's w_tᵀ h_t + b_t): a log-rate for
  count tasks, a logit for binary ones; on panel data the base class adds the forecast offset.
The advertiser profile (``model.m2m.profile_features``) feeds S̃ and, with ``profile_in_experts``,
F too; ``model.use_scenario_feature`` adds the scenario-id embedding to F and
``model.history_summary`` the other models' history summary. Ablation switches:
``use_meta_attention``, ``use_meta_tower`` (same structure, shared weights) and
``use_transformer`` (pool the position-embedded steps without self-attention).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msmt.layers import MLP, FeatureEncoder
from msmt.layers.experts import ExpertBank
from msmt.layers.meta_attention import MetaAttention
from msmt.layers.meta_tower import MetaTower
from msmt.layers.scenario_knowledge import ScenarioKnowledge
from msmt.layers.sequence import PanelEncoder
from msmt.models.base import MultiTaskModel
from msmt.models.registry import register
from msmt.spec.errors import ConfigError
from msmt.spec.model_params import M2MParams


@register("m2m")
class M2M(MultiTaskModel):
    """Input: a Batch (docs/architecture.md); output: {task: [B]} logits / log-rates / values."""

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        p: M2MParams = self.params
        feats = schema.spec.features
        # one fused table for all fields (+ the scenario id with model.use_scenario_feature), and
        # the panel-history summary of the other models with model.history_summary
        self.encoder = FeatureEncoder(
            schema, cfg.embedding_dim, with_scenario=cfg.use_scenario_feature, history=cfg.history_summary, history_live=cfg.history_live, id_warmup=cfg.id_warmup,
            oov_init=cfg.oov_init,
        )
        field_names = [f.name for f in (*feats.sparse, *feats.multi_sparse)] + (["<scenario id>"] if cfg.use_scenario_feature else [])
        dense_names = [f.name for f in feats.dense]
        unknown = sorted(set(p.profile_features) - set(field_names) - set(dense_names))
        if unknown:
            raise ConfigError(f"model.m2m.profile_features: unknown feature(s) {unknown} (features: {field_names + dense_names})")
        prof = set(p.profile_features)
        in_experts = set() if p.profile_in_experts else prof  # what F leaves out
        self._index("feat_fields", [i for i, n in enumerate(field_names) if n not in in_experts])
        self._index("feat_dense", [i for i, n in enumerate(dense_names) if n not in in_experts])
        self._index("prof_fields", [i for i, n in enumerate(field_names) if n in prof])
        self._index("prof_dense", [i for i, n in enumerate(dense_names) if n in prof])
        self.gather_features = bool(in_experts)
        d = cfg.embedding_dim
        feat_dim = d * len(self.feat_fields) + len(self.feat_dense)
        profile_dim = d * len(self.prof_fields) + len(self.prof_dense)
        if cfg.history_summary:
            feat_dim += self.encoder.history.out_dim

        panel = schema.panel
        self.panel: PanelEncoder | None = None
        if panel:
            self.panel = PanelEncoder(
                panel, p.seq_len, p.seq_dim, p.seq_heads, p.seq_layers, p.seq_ff_dim, cfg.dropout, p.use_transformer,
                p.sequence_encoder,
            )
            feat_dim += self.panel.out_dim

        self.experts = ExpertBank(
            p.num_experts, feat_dim, list(p.expert_dims or cfg.hidden_dims), cfg.activation, cfg.dropout, init="stacked"
        )
        e = self.experts.out_dim
        self.task_embedding = nn.Parameter(torch.randn(self.num_tasks, p.task_dim) * 0.1)  # [m, Dt]
        self.task_view = MLP(p.task_dim, [e], act=cfg.activation)
        self.scenario = ScenarioKnowledge(
            schema, d, profile_dim, list(p.scenario_hidden), p.scenario_dim, cfg.activation, dropout=p.scenario_dropout
        )
        s = p.scenario_dim
        self.attention = MetaAttention(e, e, s, p.meta_hidden, p.meta_layers, cfg.activation, static=not p.use_meta_attention)
        self.tower = MetaTower(self.num_tasks, e, s, p.meta_hidden, p.meta_layers, p.tower_levels, cfg.activation, static=not p.use_meta_tower)
        if cfg.tower_dims:  # out_t = Tower_t(h_t): an MLP head per task after the meta tower
            self.towers = nn.ModuleDict({t: MLP(e, cfg.tower_dims, 1, cfg.activation, cfg.dropout) for t in self.task_names})
        else:  # out_t = w_tᵀ h_t + b_t, the paper's output layer
            self.out_weight = nn.Parameter(torch.randn(self.num_tasks, e) / e**0.5)  # w_t, [m, E]
            self.out_bias = nn.Parameter(torch.zeros(self.num_tasks))  # b_t

    def _index(self, name: str, values: list[int]) -> None:
        self.register_buffer(name, torch.tensor(values, dtype=torch.long), persistent=False)

    def inputs(self, batch) -> tuple[Tensor, Tensor]:
        """(F [B, D], advertiser profile A [B, A]) from one embedding lookup."""
        fields = self.encoder.embed_fields(batch)  # [B, n_fields, d]
        dense = batch["dense"]
        if self.gather_features:  # the profile is kept out of F
            feats = [fields.index_select(1, self.feat_fields).flatten(1), dense.index_select(1, self.feat_dense)]
        else:  # every field and dense column feeds F in order, no gathers
            feats = [fields.flatten(1), dense]
        if len(self.prof_fields) or len(self.prof_dense):
            profile = torch.cat([fields.index_select(1, self.prof_fields).flatten(1), dense.index_select(1, self.prof_dense)], 1)
        else:
            profile = dense[:, :0]
        if self.encoder.history is not None:
            feats.append(self.encoder.history(batch))
        if self.panel is not None:
            feats.append(self.panel(batch))
        feats = [f for f in feats if f.shape[1]] or feats[:1]
        return (feats[0] if len(feats) == 1 else torch.cat(feats, dim=1)), profile

    def scenario_representation(self, batch) -> Tensor:
        """S̃ [B, s] (exposed for inspection and tests)."""
        return self.scenario(batch, self.inputs(batch)[1])

    def network(self, batch) -> dict[str, Tensor]:
        x, profile = self.inputs(batch)
        s = self.scenario(batch, profile)  # S̃ [B, s]
        experts = self.experts(x)  # [B, k, E]
        tasks = self.task_view(self.task_embedding)  # [m, E]
        r, _ = self.attention(experts, tasks, s)  # [B, m, E]
        h = self.tower(r, s)  # [B, m, E]
        if hasattr(self, "towers"):
            return {t: self.towers[t](h[:, i]).squeeze(-1) for i, t in enumerate(self.task_names)}
        out = (h * self.out_weight).sum(-1) + self.out_bias  # [B, m]
        return {t: out[:, i] for i, t in enumerate(self.task_names)}

    def personal_parameters(self) -> list[str]:
        """The task heads after the meta tower (``towers.*``, or w_t, b_t without ``model.tower_dims``)."""
        return super().personal_parameters() if hasattr(self, "towers") else ["out_weight", "out_bias"]

    def shared_parameters(self) -> list[nn.Parameter]:
        """Everything every task flows through: inputs, sequences, experts, S̃, task-view MLP, attention."""
        mods = [self.encoder, self.experts, self.task_view, self.scenario, self.attention]
        if self.panel is not None:
            mods.append(self.panel)
        return [q for mod in mods for q in mod.parameters()]

    def scenario_parameters(self) -> list[nn.Parameter]:
        """The S̃ path (scenario attributes/id embedding and MLP): what few-shot adaptation moves."""
        return list(self.scenario.parameters())

    def last_shared_layer(self) -> nn.Module | None:
        return self.experts.last_layers()
