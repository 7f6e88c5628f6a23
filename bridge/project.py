"""Map KG entity vectors into a language model's input-embedding space.

:class:`EntityProjector` is initialised in closed form, as E-BERT did: ridge least squares on
*anchor pairs* (:func:`anchor_pairs`: entities whose name is a single wordpiece, paired with
that wordpiece's embedding), then scaled so its outputs have the word embeddings' mean norm.
It works before any training and stays an ordinary trainable ``nn.Module``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from .vectors import KGVectors

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["EntityProjector", "anchor_pairs", "normalize_entity_name", "PROJECTOR_KINDS", "ANCHOR_POOLS"]

PROJECTOR_KINDS = ("linear", "mlp")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# WordNet synset names: lemma.pos.sense, e.g. "dog.n.01", "hot_dog.n.01", "st._louis.n.01".
_SYNSET = re.compile(r"^(.+)\.[nvasr]\.\d+$")


def _as_matrix(x: torch.Tensor | nn.Module) -> torch.Tensor:
    """A ``(V, h)`` detached float tensor from a tensor or an ``nn.Embedding``-like module."""
    w = x.weight if isinstance(x, nn.Module) else x
    w = torch.as_tensor(w).detach()
    if w.dim() != 2:
        raise ValueError(f"word embeddings must be 2-D (vocab, hidden), got shape {tuple(w.shape)}")
    return w.float()


class EntityProjector(nn.Module):
    """``d_kg -> hidden``: a KG vector to an input embedding of the language model.

    Args:
        d_kg: KG vector size (ComplEx/RotatE: ``2 * hidden_dim``, real | imaginary).
        hidden: the LM's embedding size.
        kind: ``"linear"`` (default): ``y = W x + b``. ``"mlp"``: the same linear map plus a
            residual two-layer GELU MLP whose output layer starts at zero, so an MLP projector
            starts exactly as the linear one (and as its ridge fit) and training adds the
            non-linear part. :meth:`fit_ridge` sets the linear path only.
        mlp_hidden: width of the MLP branch (default ``max(d_kg, hidden)``).

    ``forward``: ``(..., d_kg) -> (..., hidden)``.
    """

    def __init__(self, d_kg: int, hidden: int, kind: str = "linear", mlp_hidden: int | None = None) -> None:
        super().__init__()
        if kind not in PROJECTOR_KINDS:
            raise ValueError(f"kind {kind!r}: expected one of {', '.join(PROJECTOR_KINDS)}")
        if d_kg < 1 or hidden < 1:
            raise ValueError(f"d_kg and hidden must be >= 1, got {d_kg}, {hidden}")
        self.d_kg, self.hidden, self.kind = int(d_kg), int(hidden), kind
        self.linear = nn.Linear(d_kg, hidden)
        self.mlp_hidden: int | None = None
        self.mlp: nn.Sequential | None = None
        if kind == "mlp":
            self.mlp_hidden = int(mlp_hidden or max(d_kg, hidden))
            self.mlp = nn.Sequential(nn.Linear(d_kg, self.mlp_hidden), nn.GELU(), nn.Linear(self.mlp_hidden, hidden))
            nn.init.zeros_(self.mlp[2].weight)  # residual branch starts silent: mlp == linear at init
            nn.init.zeros_(self.mlp[2].bias)
        # mean output norm on the last ridge fit's inputs, so rescale_to() can work without them
        self._fit_out_norm: float | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (..., d_kg)`` -> ``(..., hidden)``."""
        y = self.linear(x)
        if self.mlp is not None:
            y = y + self.mlp(x)
        return y

    def config(self) -> dict:
        return {"d_kg": self.d_kg, "hidden": self.hidden, "kind": self.kind, "mlp_hidden": self.mlp_hidden}

    # ---- closed-form initialisation ----------------------------------------------
    @torch.no_grad()
    def fit_ridge(self, kg: torch.Tensor, target: torch.Tensor, alpha: float = 1.0) -> "EntityProjector":
        """Set the linear map to the ridge least-squares solution; returns ``self``.

        Minimises ``||X W + 1 b - Y||^2 + alpha ||W||^2`` (the bias is not penalised: both
        sides are centred first), in float64.

        Args:
            kg: ``(n, d_kg)`` KG vectors of the anchors.
            target: ``(n, hidden)`` the embeddings they should map to.
            alpha: ridge strength, ``>= 0``; ``0`` gives the minimum-norm least-squares fit.
        """
        X, Y = torch.as_tensor(kg).detach().double(), torch.as_tensor(target).detach().double()
        if X.dim() != 2 or X.shape[1] != self.d_kg:
            raise ValueError(f"kg must be (n, {self.d_kg}), got {tuple(X.shape)}")
        if Y.dim() != 2 or Y.shape[1] != self.hidden:
            raise ValueError(f"target must be (n, {self.hidden}), got {tuple(Y.shape)}")
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"kg has {X.shape[0]} rows but target has {Y.shape[0]}")
        if X.shape[0] < 2:
            raise ValueError(f"ridge fit needs at least 2 anchor pairs, got {X.shape[0]}")
        if not (alpha >= 0 and alpha < float("inf")):
            raise ValueError(f"alpha must be finite and >= 0, got {alpha}")
        if not (torch.isfinite(X).all() and torch.isfinite(Y).all()):
            raise ValueError("kg or target contains NaN or infinite values")
        xm, ym = X.mean(0), Y.mean(0)
        Xc, Yc = X - xm, Y - ym
        n, d = Xc.shape
        if alpha == 0:
            W = torch.linalg.lstsq(Xc, Yc, driver="gelsd").solution  # rank-deficient safe
        elif d <= n:  # primal: a (d, d) system
            W = torch.linalg.solve(Xc.T @ Xc + alpha * torch.eye(d, dtype=X.dtype), Xc.T @ Yc)
        else:  # dual: a (n, n) system, cheaper with few anchors and wide KG vectors
            W = Xc.T @ torch.linalg.solve(Xc @ Xc.T + alpha * torch.eye(n, dtype=X.dtype), Yc)
        b = ym - xm @ W
        dev, dt = self.linear.weight.device, self.linear.weight.dtype
        self.linear.weight.copy_(W.T.to(dev, dt))
        self.linear.bias.copy_(b.to(dev, dt))
        if self.mlp is not None:
            self.mlp[2].weight.zero_()
            self.mlp[2].bias.zero_()
        self._fit_out_norm = float((X @ W + b).norm(dim=1).mean())
        return self

    @torch.no_grad()
    def rescale_to(self, word_embeddings: torch.Tensor | nn.Module, kg: torch.Tensor | None = None) -> float:
        """Scale the outputs so their mean norm equals the word embeddings' mean row norm.

        Multiplies the final weights and biases by one factor (the map stays linear/MLP as it
        was). All-zero rows (an untrained padding row) are left out of the target mean.

        Args:
            word_embeddings: ``(V, hidden)`` tensor or an ``nn.Embedding``.
            kg: ``(n, d_kg)`` the inputs whose outputs to measure; default: the last
                :meth:`fit_ridge` inputs.
        Returns:
            the factor applied.
        """
        W = _as_matrix(word_embeddings)
        if W.shape[1] != self.hidden:
            raise ValueError(f"word embeddings have {W.shape[1]} columns, the projector outputs {self.hidden}")
        norms = W.norm(dim=1)
        norms = norms[norms > 0]
        if norms.numel() == 0:
            raise ValueError("word embeddings are all zero; no norm to match")
        target = float(norms.mean())
        if kg is not None:
            p = next(self.parameters())
            current = float(self(torch.as_tensor(kg).to(p.device, p.dtype)).norm(dim=-1).mean())
        elif self._fit_out_norm is not None:
            current = self._fit_out_norm
        else:
            raise ValueError("rescale_to needs kg (n, d_kg) unless fit_ridge() ran first")
        if not current > 0:
            raise ValueError("the projector's outputs are all zero; nothing to rescale")
        factor = target / current
        last = [self.linear] + ([self.mlp[2]] if self.mlp is not None else [])
        for lin in last:  # y = L x + M(x): scaling both output layers scales y exactly
            lin.weight.mul_(factor)
            lin.bias.mul_(factor)
        if self._fit_out_norm is not None:
            self._fit_out_norm *= factor
        return factor

    @classmethod
    def fit_from_anchors(cls, kg_vectors: KGVectors, tokenizer: PreTrainedTokenizerBase,
                         word_embeddings: torch.Tensor | nn.Module, alpha: float = 1.0, kind: str = "linear",
                         names: Sequence[str] | None = None, rescale: bool = True) -> "EntityProjector":
        """E-BERT initialisation in one call: :func:`anchor_pairs`, :meth:`fit_ridge`, :meth:`rescale_to`."""
        kg, target, _ = anchor_pairs(kg_vectors, tokenizer, word_embeddings, names=names)
        if kg.shape[0] < 2:
            raise ValueError(f"only {kg.shape[0]} entity name(s) are single wordpieces of the tokenizer; "
                             "need >= 2 anchor pairs (pass names= with readable names?)")
        proj = cls(kg_vectors.dim, target.shape[1], kind=kind).fit_ridge(kg, target, alpha)
        if rescale:
            proj.rescale_to(word_embeddings)
        return proj

    # ---- persistence ------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``path`` (each atomically)."""
        from kgengine.persist import save_tensors, write_config

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_tensors(path / WEIGHTS_FILE, self.state_dict())
        write_config(path / CONFIG_FILE, dict(self.config(), architecture=type(self).__name__,
                                              fit_out_norm=self._fit_out_norm))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "EntityProjector":
        """Rebuild a projector written by :meth:`save_pretrained`."""
        from safetensors.torch import load_file

        path = Path(path)
        for f in (CONFIG_FILE, WEIGHTS_FILE):
            if not (path / f).is_file():
                raise FileNotFoundError(f"{path / f}: missing; not an EntityProjector folder")
        from kgengine.persist import read_config

        cfg = read_config(path / CONFIG_FILE)
        try:
            proj = cls(cfg["d_kg"], cfg["hidden"], cfg.get("kind", "linear"), cfg.get("mlp_hidden"))
        except KeyError as e:
            raise ValueError(f"{path / CONFIG_FILE}: missing key {e}") from None
        state = load_file(str(path / WEIGHTS_FILE))
        try:
            proj.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{path / WEIGHTS_FILE}: weights do not fit the config ({e})") from None
        proj._fit_out_norm = cfg.get("fit_out_norm")
        return proj.to(device)


# ---- anchors ---------------------------------------------------------------------------
def normalize_entity_name(name: str) -> str:
    """WordNet-style names to words: ``"hot_dog.n.01" -> "hot dog"``; other names keep their text
    with ``_`` read as a space."""
    m = _SYNSET.match(name)
    return (m.group(1) if m else name).replace("_", " ").strip()


def _normalizer(tokenizer: PreTrainedTokenizerBase):
    """A function applying the tokenizer's own text normalisation (lowercasing, accents) to a word."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    norm = getattr(backend, "normalizer", None) if backend is not None else None
    if norm is not None:
        return norm.normalize_str
    lower = getattr(tokenizer, "do_lower_case", None)
    if lower is None:
        lower = getattr(tokenizer, "init_kwargs", {}).get("do_lower_case", False)
    return str.lower if lower else (lambda s: s)


ANCHOR_POOLS = ("single", "mean")


def anchor_pairs(kg_vectors: KGVectors, tokenizer: PreTrainedTokenizerBase,
                 word_embeddings: torch.Tensor | nn.Module,
                 names: Sequence[str | None] | None = None,
                 pool: str = "single") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Anchor pairs: entities whose name the LM already embeds, paired with that embedding.

    ``pool="single"`` (E-BERT): the (normalised) name must be one whole wordpiece of the
    vocabulary. ``pool="mean"``: any name works whose wordpieces are all real vocabulary pieces (no
    unknown or special token): the target is the mean of their embeddings, so a KG whose names are
    phrases (``New York City``, ``Barack Obama``) still gets anchors. A name is read with
    :func:`normalize_entity_name` (``dog.n.01`` -> ``dog``), then the tokenizer's own normaliser
    (lowercase and accent stripping for uncased models); with ``"single"`` continuation pieces
    (``##x``), special tokens and added tokens never count. Several entities may share one word
    (``bank.n.01``, ``bank.n.02``): each is a pair.

    Args:
        kg_vectors: the table, ``n`` rows of size ``d_kg``.
        tokenizer: an HF tokenizer.
        word_embeddings: ``(V, hidden)`` tensor or the model's input ``nn.Embedding``.
        names: readable names aligned with ``kg_vectors`` rows (default ``kg_vectors.names``),
            e.g. WordNet sense names for a table keyed by synset offsets; an empty name or None
            makes that row no anchor.
        pool: ``"single"`` or ``"mean"``.
    Returns:
        ``kg (a, d_kg)``, ``target (a, hidden)`` (detached float32), and the ``a`` entity names
        (from ``kg_vectors.names``), in table order.
    """
    if pool not in ANCHOR_POOLS:
        raise ValueError(f"pool {pool!r}: expected one of {', '.join(ANCHOR_POOLS)}")
    W = _as_matrix(word_embeddings)
    names = kg_vectors.names if names is None else list(names)
    if len(names) != len(kg_vectors):
        raise ValueError(f"names has {len(names)} entries, the KG table {len(kg_vectors)} rows")
    vocab = tokenizer.get_vocab()
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    excluded = set(tokenizer.all_special_ids) | set(added)
    norm = _normalizer(tokenizer)
    if pool == "mean":
        return _mean_anchors(kg_vectors, tokenizer, W, names, excluded)
    rows, toks = [], []
    for i, n in enumerate(names):  # string work per name: one pass at set-up, not a hot path
        w = norm(normalize_entity_name(n)) if n else ""
        t = vocab.get(w) if w and not w.startswith("##") and " " not in w else None
        if t is not None and t not in excluded and t < W.shape[0]:
            rows.append(i)
            toks.append(t)
    r, t = torch.tensor(rows, dtype=torch.long), torch.tensor(toks, dtype=torch.long)
    return kg_vectors.vectors[r], W[t], [kg_vectors.names[i] for i in rows]


def _mean_anchors(kg_vectors: KGVectors, tokenizer, W: torch.Tensor, names: Sequence[str | None],
                  excluded: set[int]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``pool="mean"``: one batched tokenisation, then a segment mean of the pieces' embeddings."""
    rows = [i for i, n in enumerate(names) if n and normalize_entity_name(n)]
    texts = [normalize_entity_name(names[i]) for i in rows]
    pieces = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    keep = [k for k, p in enumerate(pieces) if p and not (set(p) & excluded) and max(p) < W.shape[0]]
    if not keep:
        return kg_vectors.vectors[:0], W[:0], []
    flat = torch.tensor([t for k in keep for t in pieces[k]], dtype=torch.long)
    seg = torch.repeat_interleave(torch.arange(len(keep)), torch.tensor([len(pieces[k]) for k in keep]))
    target = torch.zeros(len(keep), W.shape[1]).index_add_(0, seg, W[flat])
    target /= torch.bincount(seg, minlength=len(keep)).unsqueeze(1).to(target.dtype)
    r = torch.tensor([rows[k] for k in keep], dtype=torch.long)
    return kg_vectors.vectors[r], target, [kg_vectors.names[i] for i in r.tolist()]
