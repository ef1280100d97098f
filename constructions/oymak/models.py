"""The one-layer attention models of our formalization of Oymak et al. (notes/oymak.md, Section 1).

X is a batch of sequences, shape (n, T, d); rows x_t are tokens. s(a) = softmax over the T tokens
(log-sum-exp), xbar = (1/T) sum_t x_t. W is a fixed key-query matrix (identity unless given).

    PA   (softmax prompt-attention):  f_PA(X; p, v)  = v^T X^T s(X W p)
    UNIF (uniform attention = PA at p = 0):  f_U(X; v) = v^T xbar
    LPA  (linear prompt-attention):   f_LPA(X; p, v) = (1/T) v^T X^T X W p
    SA   (softmax self-attention, mean-pooled):  f_SA(X; W, v) = (1/T) 1^T s_row(X W X^T) X v
    SAq  (self-attention, first token queries):  f_SAq(X; W, v) = v^T X^T s(X W x_1)

The prediction is sign(f). SA's W is learned (d x d); PA and LPA learn the prompt p and head v.
Each model is a batched numpy function (float64 reference) and a torch module (training); a
parity test ties the two.
"""

from __future__ import annotations

import numpy as np
import torch

from constructions.torch_threads import torch_threads

MODEL_NAMES = ("PA", "SA", "SAq", "LPA", "UNIF")


# --- numpy ----------------------------------------------------------------------------------------

def softmax(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """Log-sum-exp softmax along ``axis``."""
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _key_query(W: np.ndarray | None, p: np.ndarray) -> np.ndarray:
    return p if W is None else W @ p


def pa_attention(X: np.ndarray, p: np.ndarray, W: np.ndarray | None = None) -> np.ndarray:
    """Prompt attention weights s(X W p), shape (n, T)."""
    return softmax(X @ _key_query(W, p), axis=-1)


def pa_features(X: np.ndarray, p: np.ndarray, W: np.ndarray | None = None) -> np.ndarray:
    """phi(X) = X^T s(X W p), shape (n, d): the attended token, which the head reads linearly."""
    return np.einsum("nt,ntd->nd", pa_attention(X, p, W), X)


def pa_forward(X: np.ndarray, p: np.ndarray, v: np.ndarray, W: np.ndarray | None = None) -> np.ndarray:
    """f_PA(X) = v^T X^T s(X W p), shape (n,)."""
    return pa_features(X, p, W) @ v


def uniform_forward(X: np.ndarray, v: np.ndarray) -> np.ndarray:
    """f_U(X) = v^T xbar, shape (n,)."""
    return X.mean(axis=1) @ v


def second_moment(X: np.ndarray) -> np.ndarray:
    """S(X) = (1/T) X^T X, shape (n, d, d): LPA sees X only through S."""
    return np.einsum("ntd,nte->nde", X, X) / X.shape[1]


def lpa_forward(X: np.ndarray, p: np.ndarray, v: np.ndarray, W: np.ndarray | None = None) -> np.ndarray:
    """f_LPA(X) = (1/T) v^T X^T X W p = v^T S(X) W p, shape (n,)."""
    return np.einsum("ntd,nt->nd", X, X @ _key_query(W, p)) @ v / X.shape[1]


def sa_forward(X: np.ndarray, W: np.ndarray, v: np.ndarray) -> np.ndarray:
    """f_SA(X) = (1/T) sum_i sum_j s_ij x_j . v with s_i = softmax_j(x_i^T W x_j), shape (n,)."""
    scores = np.einsum("nid,de,nje->nij", X, W, X)  # (n, T, T)
    out = np.einsum("nij,nj->ni", softmax(scores, axis=-1), X @ v)
    return out.mean(axis=1)


def saq_forward(X: np.ndarray, W: np.ndarray, v: np.ndarray) -> np.ndarray:
    """f_SAq(X) = v^T X^T s(X W x_1): the first token is the query, shape (n,)."""
    scores = np.einsum("ntd,de,ne->nt", X, W, X[:, 0, :])
    return np.einsum("nt,nt->n", softmax(scores, axis=-1), X @ v)


def forward(name: str, params: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """Dispatch by model name with a parameter dict {"p", "v", "W"} (numpy)."""
    if name == "PA":
        return pa_forward(X, params["p"], params["v"])
    if name == "UNIF":
        return uniform_forward(X, params["v"])
    if name == "LPA":
        return lpa_forward(X, params["p"], params["v"])
    if name == "SA":
        return sa_forward(X, params["W"], params["v"])
    if name == "SAq":
        return saq_forward(X, params["W"], params["v"])
    raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")


def zero_one_error(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-example 0-1 loss 1[y f <= 0] (a tie counts as an error), shape (n,)."""
    return (y * f <= 0).astype(np.float64)


# --- torch ----------------------------------------------------------------------------------------

class AttentionModel(torch.nn.Module):
    """One of the five models as a torch module (float64). Parameters: p (d,), v (d,), W (d, d)
    as the model uses them; ``numpy_params`` exports them for the numpy reference."""

    def __init__(self, name: str, d: int, init: dict[str, np.ndarray] | None = None,
                 generator: torch.Generator | None = None, init_scale: float = 0.1) -> None:
        super().__init__()
        if name not in MODEL_NAMES:
            raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
        self.name = name
        init = init or {}
        shapes = {"v": (d,)}
        if name in ("PA", "LPA"):
            shapes["p"] = (d,)
        if name in ("SA", "SAq"):
            shapes["W"] = (d, d)
        for key, shape in shapes.items():
            if key in init:
                value = torch.as_tensor(np.asarray(init[key], dtype=np.float64).reshape(shape))
            else:
                value = init_scale * torch.randn(shape, generator=generator, dtype=torch.float64)
            setattr(self, key, torch.nn.Parameter(value.clone()))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """X (n, T, d) -> f (n,)."""
        if self.name == "PA":
            s = torch.softmax(X @ self.p, dim=-1)  # (n, T)
            return (s * (X @ self.v)).sum(dim=1)
        if self.name == "UNIF":
            return X.mean(dim=1) @ self.v
        if self.name == "LPA":
            return ((X @ self.p) * (X @ self.v)).mean(dim=1)
        if self.name == "SA":
            s = torch.softmax((X @ self.W) @ X.transpose(1, 2), dim=-1)  # (n, T, T)
            return (s @ (X @ self.v).unsqueeze(-1)).squeeze(-1).mean(dim=1)
        keys = X[:, 0, :] @ self.W.T  # SAq: W x_1, (n, d)
        s = torch.softmax((X @ keys.unsqueeze(-1)).squeeze(-1), dim=-1)  # (n, T)
        return (s * (X @ self.v)).sum(dim=1)

    def attention(self, X: torch.Tensor) -> torch.Tensor:
        """Attention weights over tokens (n, T): the prompt's (PA), the query-averaged (SA),
        the first token's (SAq), |linear weights| normalised (LPA), uniform (UNIF)."""
        n, T, _ = X.shape
        if self.name == "PA":
            return torch.softmax(X @ self.p, dim=-1)
        if self.name == "SA":
            return torch.softmax(torch.einsum("nid,de,nje->nij", X, self.W, X), dim=-1).mean(dim=1)
        if self.name == "SAq":
            return torch.softmax(torch.einsum("ntd,de,ne->nt", X, self.W, X[:, 0, :]), dim=-1)
        if self.name == "LPA":
            w = (X @ self.p).abs()
            return w / w.sum(dim=1, keepdim=True).clamp_min(1e-300)
        return torch.full((n, T), 1.0 / T, dtype=X.dtype)

    def numpy_params(self) -> dict[str, np.ndarray]:
        """Parameters as float64 numpy arrays."""
        return {name: value.detach().numpy().copy() for name, value in self.named_parameters()}


def single_thread():
    """Run torch with one intra-op thread (tiny tensors are much faster so), then restore."""
    return torch_threads(1)


def fit_logistic(model: AttentionModel, X: np.ndarray, y: np.ndarray, steps: int, lr: float,
                 weight_decay: float = 0.0) -> list[float]:
    """Full-batch Adam on the logistic loss mean(log(1 + exp(-y f(X)))) (+ weight_decay/2 |theta|^2).
    Deterministic given the model's initial parameters. Returns the loss curve."""
    Xt = torch.as_tensor(X, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    with single_thread():
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.softplus(-yt * model(Xt)).mean()
            if weight_decay:
                loss = loss + 0.5 * weight_decay * sum((w ** 2).sum() for w in model.parameters())
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return losses
