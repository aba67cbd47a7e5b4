"""Composable function transforms (`tl.func`), with torch.func's names and signatures.

    import tensorlite as tl
    f = lambda x: (x ** 3).sum()
    tl.func.grad(f)(x)                          # 3 x^2
    tl.func.grad(tl.func.grad(f))(x)            # 6 x            (x a one-element tensor)
    tl.func.hessian(f)(x)                       # diag(6 x)
    tl.func.hvp(f, (x,), (v,))                  # (f(x), H v)

Each transform takes a function of Tensors and returns a new function of Tensors. Arguments
that are differentiated may be Tensors, NumPy arrays or numbers (converted as `tl.Tensor`
converts them; integer data becomes float32); the others are passed to `f` unchanged.

How nesting works. A transform runs `f` on fresh graph nodes of its own, one per
differentiated argument, and differentiates with `tl.autograd.grad`. It asks the engine to
record the backward pass (`create_graph=True`) exactly when an enclosing computation may
differentiate the result again: when the graph of `f`'s output reaches a tensor that requires
grad other than this transform's own nodes (an argument that is itself a node of an outer
transform, a tensor `f` closes over, a model parameter), or when a cotangent or tangent
passed in requires grad. The result then carries a graph back to those outer tensors, so
`grad(grad(grad(f)))` is three reverse passes, each differentiating the recorded pass below.
Otherwise the result is a constant and the graph is freed, as in a first-order `backward`.

Pytrees. Wherever torch.func takes one, a differentiated argument (and a tangent, a cotangent,
an output) may be a nested structure of dicts, lists and tuples with tensors at the leaves, and
the result has the same structure: `grad(loss)(dict(model.named_parameters()), x)` returns a
dict of gradients under the same names (use `functional_call` to make the model a function of
such a dict), and `hessian` of a function of a dict is a dict of dicts.

Fresh nodes per level are what keep levels apart: in
`grad(lambda x: x * grad(lambda y: x * y)(x))` the inner transform differentiates with respect
to its own copy of `x`, so the inner result is `x` (not `2 x`) and the whole is `2 x`.
"""

from __future__ import annotations

import functools
import numbers

import numpy as np

from tensorlite import autograd
from tensorlite.ops import stack
from tensorlite.tensor import Tensor, enable_grad, no_grad

__all__ = [
    "grad", "grad_and_value", "vjp", "jvp", "jacrev", "jacfwd", "hessian", "hvp", "functional_call",
]


# --------------------------------------------------------------------------------------------
# Inputs: conversion, argnums, and one fresh graph node per differentiated argument.
# --------------------------------------------------------------------------------------------

def _to_tensor(value, transform, what):
    """A Tensor, NumPy array or number as a floating-point Tensor; anything else is an error."""
    if isinstance(value, Tensor):
        tensor = value
    elif isinstance(value, (np.ndarray, np.generic, numbers.Number)) and not isinstance(value, bool):
        tensor = Tensor(value)
    else:
        raise TypeError(f"tl.func.{transform}: {what} must be a Tensor, a NumPy array or a "
                        f"number, got {type(value).__name__}")
    if tensor.dtype.kind == "c":
        raise TypeError(f"tl.func.{transform}: {what} is complex; only real floating-point "
                        f"tensors can be differentiated")
    if tensor.dtype.kind != "f":
        tensor = tensor.detach().astype(np.float32)
    return tensor


def _positions(argnums, n_args, transform):
    """argnums (int or tuple of ints, negatives allowed) as a tuple of non-negative positions."""
    many = isinstance(argnums, (tuple, list))
    requested = tuple(argnums) if many else (argnums,)
    if many and not requested:
        raise ValueError(f"tl.func.{transform}: argnums is an empty tuple; name at least one "
                         f"argument to differentiate")
    positions = []
    for a in requested:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"tl.func.{transform}: argnums must be an int or a tuple of ints, "
                            f"got {argnums!r}")
        if not -n_args <= a < n_args:
            raise ValueError(f"tl.func.{transform}: argnums={a} is out of range for f called "
                             f"with {n_args} positional argument{'s' * (n_args != 1)}")
        positions.append(int(a) % n_args)
    if len(set(positions)) != len(positions):
        raise ValueError(f"tl.func.{transform}: argnums {argnums!r} names an argument twice")
    return tuple(positions)


def _fresh_node(tensor):
    """This level's own graph node for an argument. A tensor that already requires grad (a
    node of an outer transform, a parameter) is joined to it through an identity op, so outer
    levels can still differentiate through; a constant becomes a new leaf."""
    with enable_grad():
        if tensor.requires_grad:
            return tensor.reshape(tensor.shape)
        return Tensor._make(tensor.data, True)


# --------------------------------------------------------------------------------------------
# Pytrees: nested dicts, lists and tuples with tensors (arrays, numbers) at the leaves.
# --------------------------------------------------------------------------------------------

def _flatten(tree, path=""):
    """(leaves, spec): the leaves of `tree` in order (dicts in insertion order, as torch's
    pytrees) as (path, leaf) pairs, and the spec that `_unflatten` rebuilds the tree from."""
    if isinstance(tree, dict):
        keys = list(tree)
        children = [_flatten(tree[k], f"{path}[{k!r}]") for k in keys]
        spec = ("dict", type(tree), tuple(keys), tuple(c[1] for c in children))
    elif isinstance(tree, (list, tuple)):
        children = [_flatten(v, f"{path}[{i}]") for i, v in enumerate(tree)]
        spec = ("seq", type(tree), len(tree), tuple(c[1] for c in children))
    else:
        return [(path, tree)], None
    return [leaf for c in children for leaf in c[0]], spec


def _unflatten(spec, leaves):
    """The tree of `spec` with `leaves` (an iterator, consumed in order) at its leaves."""
    if spec is None:
        return next(leaves)
    kind, kind_type, keys, children = spec
    values = [_unflatten(child, leaves) for child in children]
    if kind == "dict":
        return kind_type(zip(keys, values))
    if hasattr(kind_type, "_make"):  # a namedtuple
        return kind_type._make(values)
    return kind_type(values)


def _structure(spec):
    """The spec without container types: a list where a tuple was given is the same structure."""
    if spec is None:
        return None
    kind, _, keys, children = spec
    return kind, keys, tuple(_structure(c) for c in children)


def _same_structure(given, reference, transform, what, of):
    """The leaves of `given` when it has the structure of `reference`'s spec, else an error."""
    leaves, spec = _flatten(given)
    if _structure(spec) != _structure(reference):
        raise ValueError(f"tl.func.{transform}: {what} must have the structure of {of} "
                         f"(the same nesting of dicts, lists and tuples)")
    return [leaf for _, leaf in leaves]


def _track(args, argnums, transform):
    """(args with fresh nodes at the leaves of the differentiated positions, those nodes in
    order, and one spec per differentiated position to rebuild results with)."""
    positions = _positions(argnums, len(args), transform)
    args = list(args)
    nodes, specs = [], []
    for i in positions:
        leaves, spec = _flatten(args[i], f"argument {i}")
        fresh = [_fresh_node(_to_tensor(leaf, transform, path)) for path, leaf in leaves]
        if not fresh:
            raise ValueError(f"tl.func.{transform}: argument {i} holds no tensor to "
                             f"differentiate")
        args[i] = _unflatten(spec, iter(fresh))
        nodes.extend(fresh)
        specs.append(spec)
    return args, nodes, specs


def _per_argument(specs, flat, argnums):
    """Flat results (one per node) regrouped as the differentiated arguments: one tree per
    argument, and the tree alone when `argnums` is an int."""
    flat = iter(flat)
    trees = tuple(_unflatten(spec, flat) for spec in specs)
    return trees[0] if isinstance(argnums, (int, np.integer)) else trees


def _call(f, args):
    with enable_grad():
        return f(*args)


def _split_aux(result, has_aux, transform):
    if not has_aux:
        return result, None
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise TypeError(f"tl.func.{transform}: with has_aux=True, f must return a pair "
                        f"(output, aux), got {type(result).__name__}")
    return result[0], result[1]


def _as_output_tuple(output, transform):
    """f's output (a Tensor, or a pytree of them) as a tuple of Tensors and its spec."""
    leaves, spec = _flatten(output)
    outputs = tuple(leaf for _, leaf in leaves)
    if not outputs or not all(isinstance(o, Tensor) for o in outputs):
        raise TypeError(f"tl.func.{transform}: f must return a Tensor or a tuple (or dict) of "
                        f"Tensors, got {type(output).__name__}")
    return outputs, spec


# --------------------------------------------------------------------------------------------
# The one differentiation step every transform is built from.
# --------------------------------------------------------------------------------------------

def _reaches_outside(outputs, own_nodes):
    """True when the graph behind `outputs` reaches a leaf requiring grad that is not one of
    `own_nodes` (own nodes joined to an outer tensor are walked through to it): then an
    enclosing computation may differentiate what we compute from it."""
    own_leaves = {id(n) for n in own_nodes if n._ctx is None}
    # The graph holds ops and leaf tensors: start from the ops (or leaves) behind the outputs.
    stack_ = [o._ctx if o._ctx is not None else o for o in outputs if o.requires_grad]
    seen = set()
    while stack_:
        node = stack_.pop()
        if id(node) in seen or id(node) in own_leaves:
            continue
        seen.add(id(node))
        if isinstance(node, Tensor):
            return True  # a leaf that requires grad and is not ours
        stack_.extend(p for p in node.parents if p is not None)
    return False


def _needs_graph(outputs, own_nodes, extra=()):
    """Whether this level records its backward pass: an outer computation may differentiate the
    result through the outputs' graph or through a cotangent/tangent that requires grad."""
    return (any(isinstance(t, Tensor) and t.requires_grad for t in extra)
            or _reaches_outside(outputs, own_nodes))


def _differentiate(outputs, inputs, grad_outputs, create_graph):
    """vector-Jacobian product: sum_k grad_outputs[k]^T d outputs[k] / d inputs, one Tensor per
    input; an input the outputs do not depend on gets zeros (as in torch.func)."""
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o.requires_grad]
    grads = (None,) * len(inputs)
    if pairs:
        grads = autograd.grad([o for o, _ in pairs], list(inputs), [g for _, g in pairs],
                              retain_graph=True, create_graph=create_graph, allow_unused=True)
    return tuple(Tensor._make(np.zeros(x.shape, dtype=x.dtype), False) if g is None else g
                 for g, x in zip(grads, inputs))


def _result(tensor, keep_graph):
    """What a transform hands back: the tensor itself when an outer level may differentiate it,
    else a constant sharing its data."""
    return tensor if keep_graph else tensor.detach()


def _cotangents(given, outputs, transform, what):
    """`given` (one array per output, or a single one for a single output) as Tensors of the
    outputs' shapes and dtypes."""
    given = tuple(given) if isinstance(given, (tuple, list)) else (given,)
    given = tuple(leaf for g in given for _, leaf in _flatten(g)[0])
    if len(given) != len(outputs):
        raise ValueError(f"tl.func.{transform}: got {len(given)} {what} for "
                         f"{len(outputs)} output{'s' * (len(outputs) != 1)}")
    converted = []
    for k, (g, o) in enumerate(zip(given, outputs)):
        g = _to_tensor(g, transform, f"{what} {k}")
        if g.shape != o.shape:
            raise ValueError(f"tl.func.{transform}: {what} {k} has shape {g.shape} but "
                             f"its output has shape {o.shape}")
        converted.append(g if g.dtype == o.dtype else g.astype(o.dtype))
    return tuple(converted)


# --------------------------------------------------------------------------------------------
# grad, grad_and_value, vjp
# --------------------------------------------------------------------------------------------

def _scalar_output(value, transform):
    if not isinstance(value, Tensor):
        raise TypeError(f"tl.func.{transform}: f must return a Tensor, got "
                        f"{type(value).__name__}")
    if value.numel() != 1:
        raise ValueError(f"tl.func.{transform}: f must return a one-element Tensor (a scalar), "
                         f"got shape {value.shape}; use tl.func.vjp or tl.func.jacrev for "
                         f"non-scalar outputs")
    return value


def _ones_like(value):
    return Tensor._make(np.ones(value.shape, dtype=value.dtype), False)


def grad_and_value(f, argnums=0, has_aux=False):
    """`grad_and_value(f)(*args)` returns `(gradient, value)` of a scalar-valued `f`: the
    gradient with respect to `args[argnums]` (a tuple of gradients when `argnums` is a tuple;
    a dict, list or tuple of gradients for such an argument) and `f(*args)`. With `has_aux=True`, `f` returns `(value, aux)` and the result is
    `(gradient, (value, aux))`."""
    @functools.wraps(f)
    def gradient_and_value_of_f(*args):
        args, nodes, specs = _track(args, argnums, "grad")
        value, aux = _split_aux(_call(f, args), has_aux, "grad")
        value = _scalar_output(value, "grad")
        keep_graph = _needs_graph((value,), nodes)
        grads = _differentiate((value,), nodes, (_ones_like(value),), create_graph=keep_graph)
        grads = _per_argument(specs, grads, argnums)
        value = _result(value, keep_graph)
        return (grads, (value, aux)) if has_aux else (grads, value)
    return gradient_and_value_of_f


def grad(f, argnums=0, has_aux=False):
    """`grad(f)(*args)` is the gradient of the scalar-valued `f` with respect to
    `args[argnums]`, as a Tensor of that argument's shape (a tuple for a tuple `argnums`).
    With `has_aux=True`, `f` returns `(value, aux)` and the result is `(gradient, aux)`.
    Nests: `grad(grad(f))` is the second derivative."""
    gradient_and_value_of_f = grad_and_value(f, argnums, has_aux)

    @functools.wraps(f)
    def gradient_of_f(*args):
        grads, value = gradient_and_value_of_f(*args)
        return (grads, value[1]) if has_aux else grads
    return gradient_of_f


def vjp(f, *primals, has_aux=False):
    """`(output, vjp_fn) = vjp(f, *primals)`: `output = f(*primals)` and `vjp_fn(cotangents)`
    returns `cotangents^T J`, one Tensor per primal (always a tuple; a dict, list or tuple of
    Tensors for such a primal), for a cotangent of each output's shape (a pytree of them for a
    pytree output). `vjp_fn` may be called any number of times. With `has_aux=True`, `f`
    returns `(output, aux)` and the result is `(output, vjp_fn, aux)`."""
    args, nodes, specs = _track(primals, tuple(range(len(primals))), "vjp")
    output, aux = _split_aux(_call(f, args), has_aux, "vjp")
    outputs, spec = _as_output_tuple(output, "vjp")
    keep_graph = _needs_graph(outputs, nodes)

    def vjp_fn(cotangents):
        if spec is not None:  # a pytree of outputs takes a pytree of cotangents like it
            cotangents = _same_structure(cotangents, spec, "vjp", "cotangents", "f's output")
        cotangents = _cotangents(cotangents, outputs, "vjp", "cotangents")
        grads = _differentiate(outputs, nodes, cotangents,
                               create_graph=keep_graph or _needs_graph((), (), cotangents))
        return _per_argument(specs, grads, tuple(specs))

    output = _unflatten(spec, (_result(o, keep_graph) for o in outputs))
    return (output, vjp_fn, aux) if has_aux else (output, vjp_fn)


# --------------------------------------------------------------------------------------------
# jvp: forward mode by the double-vjp trick
# --------------------------------------------------------------------------------------------

def _linear_in_dummy(f, args, argnums, transform):
    """Run f on fresh nodes and build g(u) = u^T J for a dummy cotangent u (zeros that require
    grad). g is linear in u, so differentiating <g(u), t> with respect to u gives J t for any
    tangent t: forward mode from two reverse passes. Returns (nodes, their specs, outputs,
    the output spec, u, g)."""
    args, nodes, specs = _track(args, argnums, transform)
    outputs, spec = _as_output_tuple(_call(f, args), transform)
    dummies = tuple(Tensor._make(np.zeros(o.shape, dtype=o.dtype), True) for o in outputs)
    g = _differentiate(outputs, nodes, dummies, create_graph=True)
    return nodes, specs, outputs, spec, dummies, g


def _tangent_tensors(tangents, nodes, specs, transform):
    """The tangents (one per primal, each shaped as its primal's pytree) as Tensors, one per
    node."""
    if len(tangents) != len(specs):
        raise ValueError(f"tl.func.{transform}: got {len(tangents)} tangents for "
                         f"{len(specs)} primals")
    leaves = []
    for k, (tangent, spec) in enumerate(zip(tangents, specs)):
        if spec is None:
            leaves.append(tangent)
        else:
            leaves.extend(_same_structure(tangent, spec, transform, f"tangents {k}",
                                          f"primal {k}"))
    return _cotangents(tuple(leaves), nodes, transform, "tangents")


def _as_sequence(values):
    return tuple(values) if isinstance(values, (tuple, list)) else (values,)


def jvp(f, primals, tangents):
    """`(output, jvp_out) = jvp(f, primals, tangents)`: `output = f(*primals)` and
    `jvp_out = J t`, the derivative of f at the primals in the direction of the tangents
    (`primals` and `tangents` are tuples of the same length, each tangent shaped as its primal,
    a pytree for a pytree; a single Tensor is accepted too). `jvp_out` has the structure of
    the output.

    Forward mode here is the double-vjp trick, not a forward pass with dual numbers: with a
    dummy cotangent u, the reverse pass records g(u) = u^T J, which is linear in u, so a second
    reverse pass of <g(u), t> with respect to u yields J t. Why: the engine then needs no
    forward-mode (tangent) rule per op, only the reverse rules that every op already has and
    that are themselves differentiable, so there is one engine to read and to test. The price is
    about two reverse passes per jvp instead of one forward pass carrying tangents, and the
    graph of the first pass is kept in memory."""
    primals, tangents = _as_sequence(primals), _as_sequence(tangents)
    nodes, specs, outputs, spec, dummies, g = _linear_in_dummy(
        f, primals, tuple(range(len(primals))), "jvp")
    tangents = _tangent_tensors(tangents, nodes, specs, "jvp")
    keep_graph = _needs_graph(outputs, nodes, tangents)
    jvp_out = _differentiate(g, dummies, tangents, create_graph=keep_graph)
    return (_unflatten(spec, (_result(o, keep_graph) for o in outputs)),
            _unflatten(spec, iter(jvp_out)))


# --------------------------------------------------------------------------------------------
# Jacobians, Hessian, Hessian-vector product
# --------------------------------------------------------------------------------------------

def _basis(shape, dtype):
    """The standard basis e_0, e_1, ... of arrays of `shape`, one at a time."""
    size = int(np.prod(shape, dtype=np.int64))
    for i in range(size):
        e = np.zeros(size, dtype=dtype)
        e[i] = 1
        yield Tensor._make(e.reshape(shape), False)


def _assemble(pieces, leading_shape, trailing_shape, dtype, keep_graph, last_axis):
    """Stack Jacobian rows (or columns, along the last axis) into leading_shape + trailing_shape."""
    shape = tuple(leading_shape) + tuple(trailing_shape)
    if not pieces:
        return Tensor._make(np.zeros(shape, dtype=dtype), False)
    with (enable_grad() if keep_graph else no_grad()):
        return stack(pieces, axis=-1 if last_axis else 0).reshape(shape)


def jacrev(f, argnums=0):
    """`jacrev(f)(*args)`: the Jacobian of the Tensor-valued `f` with respect to
    `args[argnums]`, of shape `output.shape + argument.shape` (a tuple for a tuple `argnums`),
    by reverse mode: one vector-Jacobian product per output element. For pytrees, as
    torch.func: the output's structure holding, at each output tensor, the argument's
    structure of Jacobian blocks."""
    @functools.wraps(f)
    def jacobian_of_f(*args):
        args, nodes, specs = _track(args, argnums, "jacrev")
        outputs, spec = _as_output_tuple(_call(f, args), "jacrev")
        keep_graph = _needs_graph(outputs, nodes)
        per_output = []
        for output in outputs:
            rows = [_differentiate((output,), nodes, (e,), keep_graph)
                    for e in _basis(output.shape, output.dtype)]
            jacobians = [_assemble([row[k] for row in rows], output.shape, x.shape, x.dtype,
                                   keep_graph, last_axis=False)
                         for k, x in enumerate(nodes)]
            per_output.append(_per_argument(specs, jacobians, argnums))
        return _unflatten(spec, iter(per_output))
    return jacobian_of_f


def jacfwd(f, argnums=0):
    """`jacfwd(f)(*args)`: the same Jacobian as `jacrev`, built column by column from
    Jacobian-vector products (one per element of the differentiated arguments), which is the
    cheaper order when the output has more elements than the input. The products use the
    double-vjp trick of `jvp`; the first reverse pass is shared by all columns."""
    @functools.wraps(f)
    def jacobian_of_f(*args):
        nodes, specs, outputs, spec, dummies, g = _linear_in_dummy(f, args, argnums, "jacfwd")
        keep_graph = _needs_graph(outputs, nodes)
        # columns[k][i][j]: column i of the Jacobian of output j with respect to node k
        columns = [[_differentiate((g[k],), dummies, (e,), keep_graph)
                    for e in _basis(x.shape, x.dtype)] for k, x in enumerate(nodes)]
        per_output = []
        for j, output in enumerate(outputs):
            jacobians = [_assemble([column[j] for column in columns[k]], output.shape, x.shape,
                                   output.dtype, keep_graph, last_axis=True)
                         for k, x in enumerate(nodes)]
            per_output.append(_per_argument(specs, jacobians, argnums))
        return _unflatten(spec, iter(per_output))
    return jacobian_of_f


def hessian(f, argnums=0):
    """`hessian(f)(*args)`: the matrix of second derivatives of the scalar-valued `f` with
    respect to `args[argnums]`, of shape `argument.shape + argument.shape`.

    Computed as `jacrev(jacrev(f))` (reverse over reverse): one reverse pass records the
    gradient, then one reverse pass through that recorded pass per element of the argument.
    torch.func uses jacfwd(jacrev(f)) because its forward mode costs one forward pass per
    column; here forward mode is itself two reverse passes (see `jvp`), so reverse over reverse
    is the cheaper of the two."""
    return jacrev(jacrev(f, argnums), argnums)


def hvp(f, primals, tangents):
    """`(output, hvp) = hvp(f, primals, tangents)`: `f(*primals)` and the product of the Hessian
    of the scalar-valued `f` at `primals` with the tangents `v`, as
    `torch.autograd.functional.hvp` returns them (`hvp` has the structure of `primals`: a Tensor
    for a Tensor, a tuple for a tuple, a dict for a dict of parameters with a dict of tangents).

    Reverse over reverse: the gradient is recorded (`create_graph=True`), then one more reverse
    pass through it with cotangent v gives v^T H = (H v)^T, since H is symmetric. Cost: one
    forward pass, one recorded backward pass and one backward pass through the recording,
    whatever the number of inputs."""
    single = not isinstance(primals, (tuple, list))
    primals, tangents = _as_sequence(primals), _as_sequence(tangents)
    args, nodes, specs = _track(primals, tuple(range(len(primals))), "hvp")
    value = _scalar_output(_call(f, args), "hvp")
    gradients = _differentiate((value,), nodes, (_ones_like(value),), create_graph=True)
    tangents = _tangent_tensors(tangents, nodes, specs, "hvp")
    keep_graph = _needs_graph((value,), nodes, tangents)
    hessian_vector = _differentiate(gradients, nodes, tangents, create_graph=keep_graph)
    return _result(value, keep_graph), _per_argument(specs, hessian_vector,
                                                     0 if single else tuple(specs))


# --------------------------------------------------------------------------------------------
# Modules as functions of their parameters
# --------------------------------------------------------------------------------------------

def functional_call(module, parameters, args, kwargs=None):
    """`module(*args, **kwargs)` with some of its parameters replaced by the Tensors in
    `parameters` (a dict from `named_parameters()` names to Tensors), as torch.func's
    `functional_call`. It makes a model a function of its parameters, which the transforms
    above need: `tl.func.hvp(lambda *ps: loss(functional_call(model, dict(zip(names, ps)), x)),
    params, v)`. A tied parameter (GPT's `lm_head.weight` is `transformer.wte.weight`) is replaced
    wherever it is used. The module's own parameters are restored afterwards."""
    owned = dict(module.named_parameters())
    unknown = sorted(set(parameters) - set(owned))
    if unknown:
        raise KeyError(f"tl.func.functional_call: {type(module).__name__} has no parameter "
                       f"named {unknown[0]!r}")
    replacement = {id(owned[name]): tensor for name, tensor in parameters.items()}
    swapped = []  # (module, attribute, original parameter)
    try:
        for submodule in module.modules():
            for attribute, parameter in submodule._parameters.items():
                if parameter is not None and id(parameter) in replacement:
                    swapped.append((submodule, attribute, parameter))
                    # object.__setattr__: a plain attribute for the call, the registry untouched
                    object.__setattr__(submodule, attribute, replacement[id(parameter)])
        if not isinstance(args, tuple):
            args = (args,)
        return module(*args, **(kwargs or {}))
    finally:
        for submodule, attribute, parameter in reversed(swapped):
            object.__setattr__(submodule, attribute, parameter)
