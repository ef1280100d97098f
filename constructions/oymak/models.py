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

from collections.abc import Sequence

import numpy as np
import torch

from constructions.torch_threads import torch_threads

MODEL_NAMES = ("PA", "SA", "SAq", "LPA", "UNIF")


def param_shapes(name: str, d: int) -> dict[str, tuple[int, ...]]:
    """The learned parameters of each model and their shapes: v (d,) always; p (d,) for PA and
    LPA; W (d, d) for SA and SAq."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    shapes: dict[str, tuple[int, ...]] = {"v": (d,)}
    if name in ("PA", "LPA"):
        shapes["p"] = (d,)
    if name in ("SA", "SAq"):
        shapes["W"] = (d, d)
    return shapes


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


# Sequences per block in ``sa_forward``: its (n, T, T) score arrays for n = 50,000 test sequences
# are 58 MB each, and each of softmax's passes over them runs at memory speed; blocks that stay in
# the cache are 1.6x faster. Every operation is per sequence (stacked matmuls, a softmax per row, a
# mean per sequence), so the blocks give the same numbers, bit for bit.
SA_BLOCK = 1_000


def sa_forward(X: np.ndarray, W: np.ndarray, v: np.ndarray) -> np.ndarray:
    """f_SA(X) = (1/T) sum_i sum_j s_ij x_j . v with s_i = softmax_j(x_i^T W x_j), shape (n,)."""
    if len(X) > SA_BLOCK:
        return np.concatenate([sa_forward(X[i:i + SA_BLOCK], W, v) for i in range(0, len(X), SA_BLOCK)])
    scores = (X @ W) @ X.transpose(0, 2, 1)  # (n, T, T): x_i^T W x_j
    out = (softmax(scores, axis=-1) @ (X @ v)[:, :, None])[:, :, 0]
    return out.mean(axis=1)


def saq_forward(X: np.ndarray, W: np.ndarray, v: np.ndarray) -> np.ndarray:
    """f_SAq(X) = v^T X^T s(X W x_1): the first token is the query, shape (n,)."""
    scores = X @ W @ X[:, 0, :, None]  # (n, T, 1): x_t^T W x_1
    scores = scores[:, :, 0]
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
        for key, shape in param_shapes(name, d).items():
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


# --- many restarts at once (one tensor program, a leading restart axis) ----------------------------

def restart_forward(name: str, params: dict[str, torch.Tensor], X: torch.Tensor,
                    xbar: torch.Tensor | None = None) -> torch.Tensor:
    """f of R parameter settings at once: params with a leading restart axis (p, v: (R, d);
    W: (R, d, d)), X (n, T, d) -> f (R, n). The same formulas as ``AttentionModel.forward``,
    written as (n T, d) x (d, .) products so that forward and backward are plain matrix products.
    ``xbar``: X.mean(dim=1), for UNIF, when the caller has it (a fit computes it once, not at
    every step: on 3,000 digit sequences it was 80% of a UNIF step)."""
    n, T, d = X.shape
    flat = X.reshape(n * T, d)

    def project(a: torch.Tensor) -> torch.Tensor:  # (R, d) -> x_t . a_r, (R, n, T)
        return (flat @ a.T).T.reshape(-1, n, T)

    if name == "UNIF":
        return ((X.mean(dim=1) if xbar is None else xbar) @ params["v"].T).T
    Xv = project(params["v"])
    if name == "PA":
        return (torch.softmax(project(params["p"]), dim=-1) * Xv).sum(dim=-1)
    if name == "LPA":
        return (project(params["p"]) * Xv).mean(dim=-1)
    if name == "SA":
        return _sa_restart_forward(params["W"], X, flat, Xv)
    if name == "SAq":
        keys = torch.matmul(X[:, 0, :], params["W"].transpose(1, 2))  # W x_1, (R, n, d)
        s = torch.softmax(torch.einsum("ntd,rnd->rnt", X, keys), dim=-1)
        return (s * Xv).sum(dim=-1)
    raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")


def _sa_restart_forward(W: torch.Tensor, X: torch.Tensor, flat: torch.Tensor, Xv: torch.Tensor) -> torch.Tensor:
    """SA for R key-query matrices W (R, d, d): f_r = (1/T) sum_j (sum_i s_ij) x_j . v_r with
    s_i = softmax_j(x_i^T W_r x_j), given flat = X as (n T, d) and Xv = x_t . v_r (R, n, T).

    Written as the very products torch.einsum makes of "rnid,njd->rnij" and then "rnij,rnj->rn"
    (a batched product over the n sequences of (R T, d) x (d, T), a sum over i, a batched (1, T) x
    (T, 1) product per (r, n)), so the numbers are the same bit for bit; but the scores stay in that
    product's (n, R, T, T) layout, where the softmax (per row) can read them, instead of being
    permuted to (R, n, T, T): that saves a permuted copy of the scores in the forward pass and
    another of their gradient in the backward pass (12% of an SA step at the c1 sizes)."""
    n, T, d = X.shape
    R = W.shape[0]
    XW = torch.matmul(flat, W)  # x_i^T W_r, (R, n T, d)
    left = XW.reshape(R, n, T, d).permute(1, 0, 2, 3).reshape(n, R * T, d)
    s = torch.softmax(torch.bmm(left, X.transpose(1, 2)).view(n, R, T, T), dim=-1)  # (n, R, i, j)
    weight = s.sum(dim=2).permute(1, 0, 2).reshape(R * n, 1, T)  # sum_i s_ij, in (r, n) order
    return torch.bmm(weight, Xv.reshape(R * n, T, 1)).view(R, n) / T


def _restart_parameters(name: str, inits: Sequence[dict[str, np.ndarray]], d: int) -> dict[str, torch.nn.Parameter]:
    """Stack the initialisations along a leading restart axis (float64 parameters)."""
    if not inits:
        raise ValueError("need at least one initialisation")
    return {key: torch.nn.Parameter(torch.as_tensor(np.stack([np.asarray(i[key], dtype=np.float64).reshape(shape)
                                                               for i in inits])).clone())
            for key, shape in param_shapes(name, d).items()}


def _restart_loss(name: str, params: dict[str, torch.Tensor], X: torch.Tensor, y: torch.Tensor,
                  xbar: torch.Tensor | None = None) -> torch.Tensor:
    """sum_r mean_i log(1 + exp(-y_i f(X_i; theta_r))): separable over the restarts r."""
    return torch.nn.functional.softplus(-y * restart_forward(name, params, X, xbar)).mean(dim=-1).sum()


def _fit_tensors(name: str, X: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """X, y as float64 tensors, and for UNIF the mean token xbar (it does not depend on the
    parameters), computed on one thread like the steps that used to compute it."""
    Xt, yt = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    with single_thread():
        return Xt, yt, (Xt.mean(dim=1) if name == "UNIF" else None)


def _unstack(params: dict[str, torch.Tensor], count: int) -> list[dict[str, np.ndarray]]:
    return [{key: value[r].detach().numpy().copy() for key, value in params.items()} for r in range(count)]


def fit_restarts(name: str, X: np.ndarray, y: np.ndarray, inits: Sequence[dict[str, np.ndarray]],
                 iterations: int) -> list[dict[str, np.ndarray]]:
    """Train every initialisation in ``inits`` at once: full-batch L-BFGS (strong Wolfe line
    search, ``iterations`` iterations, at most 1.25 x as many loss evaluations) on

        L(theta_1..theta_R) = sum_r mean_i log(1 + exp(-y_i f(X_i; theta_r))).

    The restarts do not interact except through the shared line search: the sum is separable, so a
    minimiser of L is a minimiser of every restart's own loss. Unregularised: meant for noisy data
    that no model separates (on separable data the norms grow and it overfits; use
    ``fit_restarts_adam``). Deterministic (one torch thread). Returns one float64 parameter dict
    per initialisation, in order."""
    params = _restart_parameters(name, inits, X.shape[-1])
    Xt, yt, xbar = _fit_tensors(name, X, y)
    opt = torch.optim.LBFGS(list(params.values()), lr=1.0, max_iter=iterations, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-10, tolerance_change=1e-14)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _restart_loss(name, params, Xt, yt, xbar)
        loss.backward()
        return loss

    with single_thread():
        opt.step(closure)
    return _unstack(params, len(inits))


def fit_restarts_adam(name: str, X: np.ndarray, y: np.ndarray, inits: Sequence[dict[str, np.ndarray]],
                      steps: int, lr: float) -> list[dict[str, np.ndarray]]:
    """Train every initialisation at once by full-batch Adam (``steps`` steps at rate ``lr``) on
    the same separable sum: Adam's update is elementwise, so each restart follows exactly the
    trajectory ``fit_logistic`` gives it alone (up to rounding). A fixed, short budget is an
    implicit regulariser (early stopping), which matters on data a model can separate."""
    params = _restart_parameters(name, inits, X.shape[-1])
    Xt, yt, xbar = _fit_tensors(name, X, y)
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    with single_thread():
        for _ in range(steps):
            opt.zero_grad()
            _restart_loss(name, params, Xt, yt, xbar).backward()
            opt.step()
    return _unstack(params, len(inits))
