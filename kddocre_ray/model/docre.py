"""The KD-DocRE model: encoder -> entity pooling -> localized context -> grouped bilinear pair
features -> (optional) axial attention over the n x n pair table -> classifier with a TH class.

With `axial_layers = 0` this is exactly ATLOP's head (bilinear straight to the classes). Every
document contributes its n(n-1) real pairs, in `pair_index` order; nothing is padded to a fixed
entity count, so training and evaluation see the same thing.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..data.docred import RelSchema
from ..data.features import Feature, pair_index
from .axial import AxialAttention
from .bilinear import GroupedBilinear
from .encoder import encode, load_encoder
from .pooling import entity_pooling, localized_context


class DocREModel(nn.Module):
    def __init__(self, encoder: nn.Module, cfg: ModelConfig, num_classes: int, pad_id: int = 0):
        super().__init__()
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # unused: DDP would wait forever for its gradients
        self.encoder, self.cfg, self.pad_id = encoder, cfg, pad_id
        hidden = encoder.config.hidden_size
        self.head_extractor = nn.Linear(2 * hidden, cfg.emb_size)
        self.tail_extractor = nn.Linear(2 * hidden, cfg.emb_size)
        if cfg.axial_layers > 0:
            dim = cfg.pair_dim or hidden
            self.project = GroupedBilinear(cfg.emb_size, cfg.block_size, dim, cfg.bilinear_chunk)
            self.axial = AxialAttention(dim, cfg.axial_heads, cfg.axial_layers)
            self.classifier = nn.Linear(dim, num_classes)
        else:
            self.classifier = GroupedBilinear(cfg.emb_size, cfg.block_size, num_classes, cfg.bilinear_chunk)

    def head_parameters(self) -> list[nn.Parameter]:
        """Everything but the encoder: trained at the head learning rate."""
        return [p for n, p in self.named_parameters() if not n.startswith("encoder.")]

    def forward(self, batch: list[Feature]) -> torch.Tensor:
        """Logits for every pair of every document, concatenated in batch order: (sum P_i, C)."""
        states = encode(self.encoder, [f.input_ids for f in batch], self.cfg.max_length,
                        self.cfg.chunk_overlap, self.pad_id)
        hs, ts, rs = [], [], []
        for f, (seq, att) in zip(batch, states):
            emb, ent_att = entity_pooling(seq, att, f.entity_pos)
            pairs = pair_index(f.n_entities).to(seq.device)
            hs.append(emb[pairs[:, 0]])
            ts.append(emb[pairs[:, 1]])
            rs.append(localized_context(seq, ent_att, pairs))
        hs, ts, rs = torch.cat(hs), torch.cat(ts), torch.cat(rs)
        zh = torch.tanh(self.head_extractor(torch.cat([hs, rs], dim=1)))
        zt = torch.tanh(self.tail_extractor(torch.cat([ts, rs], dim=1)))
        if self.cfg.axial_layers == 0:
            return self.classifier(zh, zt)
        return self.classifier(self._axial(self.project(zh, zt), batch))

    def _axial(self, feats: torch.Tensor, batch: list[Feature]) -> torch.Tensor:
        """Scatter pair features into a (B, n, n, d) table, run axial attention, gather back."""
        n_ent = torch.tensor([f.n_entities for f in batch], device=feats.device)
        n = int(n_ent.max())
        b_idx, h_idx, t_idx = [], [], []
        for b, f in enumerate(batch):
            pairs = pair_index(f.n_entities)
            b_idx.append(torch.full((len(pairs),), b))
            h_idx.append(pairs[:, 0])
            t_idx.append(pairs[:, 1])
        b_idx, h_idx, t_idx = (torch.cat(x).to(feats.device) for x in (b_idx, h_idx, t_idx))
        table = feats.new_zeros(len(batch), n, n, feats.shape[-1])
        table[b_idx, h_idx, t_idx] = feats
        table = self.axial(table, n_ent)
        return table[b_idx, h_idx, t_idx]


def build_model(cfg: ModelConfig, schema: RelSchema, tokenizer, encoder=None, seed: int = 0) -> DocREModel:
    torch.manual_seed(seed)
    encoder = encoder if encoder is not None else load_encoder(cfg.encoder, seed)
    return DocREModel(encoder, cfg, schema.num_classes, tokenizer.pad_token_id)
