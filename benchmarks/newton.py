"""Newton's method with tl.func: L2-regularised logistic regression in float64.

    python benchmarks/newton.py

Each step solves H(w) d = g(w) with the exact Hessian from `tl.func.hessian` and the gradient from
`tl.func.grad`, and moves to w - d. The loss is smooth and strictly convex, so from w = 0 the
iterates converge quadratically: once close, the gradient norm is roughly squared at every step
(1e-3, 1e-6, 1e-12, ...), where gradient descent would shrink it by a constant factor.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorlite as tl  # noqa: E402
import numpy as np  # noqa: E402

from tensorlite import func  # noqa: E402


def make_problem(n_samples=200, n_features=5, seed=0):
    """Features X (n, d) and labels y in {-1, +1} from a noisy linear rule (not separable)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    true_w = rng.standard_normal(n_features)
    y = np.where(X @ true_w + rng.standard_normal(n_samples) > 0, 1.0, -1.0)
    return X, y


def logistic_loss(X, y, l2=1e-2):
    """w -> mean log(1 + exp(-y x.w)) + l2/2 |w|^2."""
    features, labels = tl.Tensor(X), tl.Tensor(y)

    def loss(w):
        margins = labels * (features @ w)  # (n,)
        return ((-margins).exp() + 1.0).log().mean() + 0.5 * l2 * (w * w).sum()
    return loss


def newton(loss, w, steps=8, tolerance=1e-14):
    """Newton's method; prints loss and gradient norm per iteration and returns the minimiser."""
    gradient, hessian = func.grad(loss), func.hessian(loss)
    for iteration in range(steps):
        g = gradient(w).data
        g_norm = np.linalg.norm(g)
        print(f"iter {iteration}  loss {loss(tl.Tensor(w)).item():.15f}  |grad| {g_norm:.3e}")
        if g_norm < tolerance:
            break
        w = w - np.linalg.solve(hessian(w).data, g)
    return w


def main():
    X, y = make_problem()
    w = newton(logistic_loss(X, y), np.zeros(X.shape[1]))
    print("w* =", np.array2string(w, precision=6))


if __name__ == "__main__":
    main()
