"""Rewrites of a traced step into fewer, larger numpy calls: `tapegrad.compile(fn, exact=False)`.

Each rewrite uses ordinary ops (concat, matmul, getitem), so the reverse sweep, its rules and the
program writer need nothing new:

  * common subexpressions: the same op of the same values with the same params (xs[t] written in every
    gate's expression) is computed once;
  * shared left operand: h @ W_i, h @ W_f, h @ W_o, h @ W_g (distinct parameters) become one product
    h @ [W_i W_f W_o W_g] and column slices of it. Parameters are joined once per call, so an
    optimizer's in-place updates are seen; their gradients come back as column slices;
  * hoisted data: x_1 @ U, ..., x_T @ U with every x_t an input or computed from inputs only become one
    product [x_1; ...; x_T] @ U before the loop and T row slices of it;
  * elementwise siblings: op(a[..., i:j], b[..., i:j]) for adjacent column ranges (the gates' `+ b`,
    their sigmoids) become one op on the covering range, 1-d parameters among the inputs joined; and
    op(q[i:j], c) for adjacent row ranges with the same c (the sunk output layer's `+ c`) one op on the rows;
  * per-step losses: a sum of mse_loss(q[rows_t], y_t) over row slices tiling one q becomes one mse_loss
    of q against the stacked targets (where nothing else reads a step's loss);
  * slices nothing reads any more are dropped.

Each slice's gradient reaches the wider value through the writer's gather (one concatenate), so a
fused cell runs one product per weight and step, as the careful hand-written LSTM does. A wider
product sums the same terms in BLAS's own blocking: results agree with eager to rounding (about 1e-16
relative per product in float64), not bit for bit; the elementwise rewrites alone are bit-identical.
"""
import collections

import numpy as np

from . import ops as _ops
from .indexed import is_basic

__all__ = ["fuse"]


def fuse(nodes, keep, node_type, value_type):
    """The trace's node list with shared-operand products fused, input products hoisted, elementwise
    siblings fused, and slices nobody uses any more dropped (`keep`: ids of values used outside)."""
    return _Rewriter(node_type, value_type).run(nodes, keep)


_BINARY = {_ops.add.op, _ops.sub.op, _ops.mul.op}
_UNARY = {_ops.sigmoid.op, _ops.tanh.op, _ops.exp.op, _ops.neg.op, _ops.relu.op}


def _is_product(node):
    """A 2-d matrix product of two arrays of one dtype (what np.dot computes for the matmul op)."""
    if node.op is not _ops.matmul.op or node.params or any(c is not None for c in node.casts) \
            or len(node.inputs) != 2:
        return False
    a, b = node.datas
    return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.ndim == 2 and b.ndim == 2 \
        and a.dtype == b.dtype and node.inputs[0].kind != "number"


class _Rewriter:
    def __init__(self, node_type, value_type):
        self.Node, self.Value = node_type, value_type
        self.count = 0
        self.prelude, self.joined = [], {}   # parameters joined once per call, at the program's start

    def run(self, nodes, keep):
        nodes = self.common_subexpressions(nodes, keep)
        nodes = self.hoist(self.fuse_shared_left(self.sink(nodes)))
        for _ in range(8):                       # each pass fuses one more layer of elementwise ops
            fused = self.fuse_siblings(nodes)
            if fused is nodes:
                break
            nodes = fused
        nodes = self.sum_losses(self.fuse_row_siblings(nodes), keep)
        return _drop_unused_slices(self.prelude + nodes, keep)

    def common_subexpressions(self, nodes, keep):
        """Nodes repeating an earlier node's op on the same values with the same params (xs[t] sliced
        once per gate) replaced by that node, so the products that read them share their operand."""
        dyn_used = {id(x) for n in nodes for d in n.dyn.values() if d is not None for x in _flat(d)} | \
            {u for n in nodes for v in n.inputs if v.kind == "alias" for u in _sources_of(v)}   # read indirectly
        first, alias, out = {}, {}, []
        for n in nodes:
            if any(id(v) in alias for v in n.inputs):
                n = self.with_inputs(n, [alias.get(id(v), v) for v in n.inputs])
            key = _same_computation_key(n)
            if key is not None and key in first and id(n.value) not in keep and id(n.value) not in dyn_used:
                alias[id(n.value)] = first[key].value
                continue
            if key is not None:
                first.setdefault(key, n)
            out.append(n)
        return out

    def with_inputs(self, node, inputs):
        new = self.Node(node.k, node.op, node.fn, inputs, node.casts, node.datas, node.params, node.dyn,
                        node.scope, node.record)
        new.out, new.value = node.out, node.value
        return new

    def join(self, params, axis):
        """The parameters concatenated along `axis`: one node per distinct list, in the prelude."""
        key = (tuple(id(p) for p in params), axis)
        if key not in self.joined:
            self.joined[key] = self.concat(params, axis, None)
            self.prelude.append(self.joined[key])
        return self.joined[key]

    def new_node(self, op, inputs, params, scope, requires_grad):
        """A node computing op(*inputs) on the traced arrays, with a fresh name (f0, f1, ...)."""
        k = f"f{self.count}"
        self.count += 1
        datas = tuple(v.array for v in inputs)
        node = self.Node(k, op, op.forward, list(inputs), [None] * len(inputs), datas, params,
                         dict.fromkeys(params), scope, None)
        node.out = np.asarray(op.forward(*datas, **params))
        node.value = self.Value("node", f"v{k}", node.out, requires_grad, node=node)
        return node

    def slice_of(self, node, whole, index):
        """`node` recomputed as whole[index]: same k and value, so every use of it stays as it is."""
        params = {"index": index}
        new = self.Node(node.k, _ops.getitem.op, _ops.getitem.op.forward, [whole.value], [None],
                        (whole.out,), params, {"index": None}, node.scope, node.record)
        new.out, new.value = whole.out[index], node.value
        return new

    def concat(self, values, axis, scope):
        sizes = [v.array.shape[axis] for v in values]
        offsets = tuple(int(o) for o in np.concatenate([[0], np.cumsum(sizes)]))
        return self.new_node(_ops._concat.op, values, {"axis": axis, "offsets": offsets}, scope,
                             any(v.requires_grad for v in values))

    def fuse_shared_left(self, nodes):
        """a @ W_1, ..., a @ W_n (distinct parameters, same rows) -> (a @ [W_1 ... W_n]) sliced."""
        groups = collections.defaultdict(list)
        for n in nodes:
            if _is_product(n) and n.inputs[1].kind == "param":
                groups[id(n.inputs[0]), n.datas[1].shape[0]].append(n)
        before, replaced = collections.defaultdict(list), {}
        for members in groups.values():
            firsts, seen = [], set()
            for m in members:
                if id(m.inputs[1]) not in seen:
                    seen.add(id(m.inputs[1]))
                    firsts.append(m)
            if len(firsts) < 2:
                continue
            wc = self.join([m.inputs[1] for m in firsts], 1)     # the same parameters joined once for every step
            left = firsts[0].inputs[0]
            product = self.new_node(_ops.matmul.op, (left, wc.value), {}, firsts[0].scope,
                                    left.requires_grad or wc.value.requires_grad)
            before[id(firsts[0])].append(product)
            offsets = wc.params["offsets"]
            for j, m in enumerate(firsts):
                replaced[id(m)] = self.slice_of(m, product, (slice(None), slice(offsets[j], offsets[j + 1])))
        return self._splice(nodes, before, replaced) if replaced else nodes

    def sink(self, nodes):
        """h_1 @ V, ..., h_T @ V whose results feed nothing the h_t depend on (an output layer read only by
        the loss) -> one product [h_1; ...; h_T] @ V after the last h_t, with what reads the results moved
        after it (as careful BPTT computes the output layer after the loop)."""
        data = _data_nodes(nodes)
        groups = collections.defaultdict(list)
        for n in nodes:
            if _is_product(n) and n.inputs[0].kind == "node" and id(n.inputs[0]) not in data:
                groups[id(n.inputs[1]), n.datas[0].shape[1]].append(n)
        for members in groups.values():
            if len(members) < 2:
                continue
            cone = _dependents(nodes, members)
            lefts = {u for m in members for u in _sources(m)[:1]}
            if any(id(n.value) in lefts for n in cone) or any(v.kind == "draw" for n in cone for v in n.inputs):
                continue                          # feeds back into the h_t (or moves a random draw): leave it
            inside = {id(n) for n in cone}
            stacked, product, replaced = self.stacked_product(members)
            nodes = [n for n in nodes if id(n) not in inside] + [stacked, product] + \
                [replaced.get(id(n), n) for n in nodes if id(n) in inside]
        return nodes

    def stacked_product(self, members):
        """x_1 @ W, ..., x_n @ W -> (the stacked [x_1; ...; x_n], its product with W, {id(member): its
        rows of the product})."""
        stacked = self.concat([m.inputs[0] for m in members], 0, None)
        weight = members[0].inputs[1]
        product = self.new_node(_ops.matmul.op, (stacked.value, weight), {}, members[0].scope,
                                stacked.value.requires_grad or weight.requires_grad)
        offsets = stacked.params["offsets"]
        return stacked, product, {id(m): self.slice_of(m, product, (slice(offsets[j], offsets[j + 1]),))
                                  for j, m in enumerate(members)}

    def hoist(self, nodes):
        """x_1 @ U, ..., x_T @ U with every x_t data (an input, or computed from inputs only, as xs[t])
        -> ([x_1; ...; x_T] @ U) sliced by rows; the x_t computed in the loop move before it."""
        data = _data_nodes(nodes)
        groups = collections.defaultdict(list)
        for n in nodes:
            left = n.inputs[0] if _is_product(n) else None
            if left is not None and not left.requires_grad and (left.kind in ("input", "const") or id(left) in data):
                groups[id(n.inputs[1]), n.datas[0].shape[1]].append(n)
        before, replaced, moved = collections.defaultdict(list), {}, set()
        for members in groups.values():
            if len(members) < 2:
                continue
            needed = _ancestors([m.inputs[0] for m in members], data)
            early = [n for n in nodes if id(n.value) in needed and id(n) not in moved]
            moved.update(id(n) for n in early)
            stacked, product, rows = self.stacked_product(members)
            before[id(members[0])] += early + [stacked, product]
            replaced.update(rows)
        if not replaced:
            return nodes
        return self._splice([n for n in nodes if id(n) not in moved], before, replaced)

    def fuse_siblings(self, nodes):
        """op(a[..., i:j], b[..., i:j]) for adjacent column ranges of the same a and b (an LSTM's four
        gates after a fused product) -> op(a[..., lo:hi], b[..., lo:hi]) sliced; a 1-d parameter of the
        range's width joins the others. Elementwise, so the values are eager's bit for bit."""
        defs = {id(n.value): n for n in nodes}
        groups = collections.defaultdict(list)
        for n in nodes:
            sig = self._sibling_signature(n, defs)
            if sig is not None:
                groups[sig[0]].append((n, sig[1]))
        position = {id(n): j for j, n in enumerate(nodes)}
        before, replaced = collections.defaultdict(list), {}
        for members in groups.values():
            for run in _adjacent_runs(members):
                fused, covers, slices = self._fuse_run(run)
                before[id(min((m for m, _ in run), key=lambda m: position[id(m)]))] += covers + [fused]
                for (m, _), index in zip(run, slices):
                    replaced[id(m)] = self.slice_of(m, fused, index)
        return self._splice(nodes, before, replaced) if replaced else nodes

    @staticmethod
    def _sibling_signature(n, defs):
        """(group key, per-input (parent value, start, stop) or (parameter,)) of an elementwise node on
        last-axis slices, else None."""
        if (n.op not in _BINARY and n.op not in _UNARY) or n.params or any(c is not None for c in n.casts):
            return None
        parts, key, width = [], [n.op, n.out.dtype, n.out.shape[:-1] if n.out.ndim else None], None
        for v in n.inputs:
            span = _axis_slice(defs.get(id(v)))
            if span is not None:
                parent, a, b = span
                if width not in (None, b - a):
                    return None
                width = b - a
                parts.append((parent, a, b))
                key.append(id(parent))
            elif v.kind == "param" and v.array.ndim == 1:
                parts.append((v,))
                key.append("param")
            else:
                return None
        if width is None or n.out.shape[-1] != width or any(len(p) == 1 and p[0].array.shape != (width,)
                                                            for p in parts):
            return None
        return tuple(key), parts

    def _fuse_run(self, run):
        """One node for a run of sibling nodes: (fused node, the slices it reads, its members' slices)."""
        first = run[0][0]
        inputs, before = [], []
        for j in range(len(first.inputs)):
            part = run[0][1][j]
            if len(part) == 1:                          # the members' parameters, joined
                inputs.append(self.join([parts[j][0] for _, parts in run], 0).value)
                continue
            parent, lo, hi = part[0], part[1], run[-1][1][j][2]
            if (lo, hi) == (0, parent.array.shape[-1]):
                inputs.append(parent)
            else:
                index = (slice(None),) * (parent.array.ndim - 1) + (slice(lo, hi),)
                cover = self.slice_of_value(parent, index, first.scope)
                before.append(cover)
                inputs.append(cover.value)
        fused = self.new_node(first.op, inputs, {}, first.scope, any(v.requires_grad for v in inputs))
        nd, edge, slices = fused.out.ndim, 0, []
        for m, _ in run:
            w = m.out.shape[-1]
            slices.append((slice(None),) * (nd - 1) + (slice(edge, edge + w),))
            edge += w
        return fused, before, slices

    def fuse_row_siblings(self, nodes):
        """op(a[i:j], c) for adjacent row ranges of the same a, with the same c broadcast over the rows (the
        sunk output layer's `+ c` at every step) -> op(a[lo:hi], c) sliced by rows. Bit-identical."""
        defs = {id(n.value): n for n in nodes}
        groups = collections.defaultdict(list)
        for n in nodes:
            if n.op not in _BINARY or n.params or any(c is not None for c in n.casts) or len(n.inputs) != 2:
                continue
            spans = [_axis_slice(defs.get(id(v)), 0) for v in n.inputs]
            if (spans[0] is None) == (spans[1] is None):
                continue
            j = 0 if spans[0] is not None else 1
            (parent, a, b), other = spans[j], n.inputs[1 - j]
            nd = np.ndim(parent.array)
            if other.kind == "draw" or np.ndim(other.array) > nd or n.out.ndim != nd or n.out.shape[0] != b - a \
                    or (np.ndim(other.array) == nd and np.shape(other.array)[0] != 1):
                continue                          # the other operand must broadcast over the rows
            parts = [spans[0], (other,)] if j == 0 else [(other,), spans[1]]
            groups[n.op, j, id(parent), id(other), n.out.dtype].append((n, parts))
        position = {id(n): k for k, n in enumerate(nodes)}
        before, replaced = collections.defaultdict(list), {}
        for (op, j, _, _, _), members in groups.items():
            for run in _adjacent_runs(members):
                first = min((m for m, _ in run), key=lambda m: position[id(m)])
                parent, lo, hi = run[0][1][j][0], run[0][1][j][1], run[-1][1][j][2]
                rows = parent
                if (lo, hi) != (0, parent.array.shape[0]):
                    cover = self.slice_of_value(parent, (slice(lo, hi),), first.scope)
                    before[id(first)].append(cover)
                    rows = cover.value
                inputs = [rows, run[0][1][1 - j][0]] if j == 0 else [run[0][1][1 - j][0], rows]
                fused = self.new_node(op, inputs, {}, first.scope, any(v.requires_grad for v in inputs))
                before[id(first)].append(fused)
                for m, parts in run:
                    replaced[id(m)] = self.slice_of(m, fused, (slice(parts[j][1] - lo, parts[j][2] - lo),))
        return self._splice(nodes, before, replaced) if replaced else nodes

    def sum_losses(self, nodes, keep):
        """l_1 + ... + l_T (adds of 0-d values, each partial sum read only by the next add) where every l_t is
        mse_loss(q[rows_t], y_t) of row slices tiling one q, y_t data, one reduction for all ('mean' over
        equal sizes, or 'sum') -> mse_loss(q, [y_1; ...; y_T], 'sum') (divided by the size for 'mean'):
        one subtraction and one dot product instead of T, one gradient array instead of T pieces."""
        defs = {id(n.value): n for n in nodes}
        uses = collections.Counter(id(v) for n in nodes for v in n.inputs)
        reader = {id(v): n for n in nodes for v in n.inputs}

        def add0(n):
            return n is not None and n.op is _ops.add.op and not n.params and np.ndim(n.out) == 0 \
                and all(c is None for c in n.casts)

        def partial(v):                           # a partial sum that only the next add of its chain reads
            return add0(defs.get(id(v))) and uses[id(v)] == 1 and id(v) not in keep and add0(reader.get(id(v)))
        replaced, dropped, data = {}, set(), None
        for top in [n for n in nodes if add0(n) and not partial(n.value)]:
            adds, terms, todo = [], [], list(top.inputs)
            while todo:
                v = todo.pop()
                if partial(v):
                    adds.append(defs[id(v)])
                    todo.extend(defs[id(v)].inputs)
                elif not (v.kind == "number" and v.number == 0):      # `loss = 0` before the loop
                    terms.append(v)
            data = _data_nodes(nodes) if data is None else data
            fused = self._fused_mse(terms, defs, uses, keep, data, top)
            if fused is not None:
                replaced[id(top)] = fused
                dropped.update(id(n) for n in adds)
                dropped.update(id(defs[id(v)]) for v in terms)
        if not replaced:
            return nodes
        return [m for n in nodes if id(n) not in dropped for m in replaced.get(id(n), [n])]

    def _fused_mse(self, terms, defs, uses, keep, data, top):
        """The nodes computing the sum of the mse terms as one loss with `top`'s value, or None."""
        from .losses import _mse
        losses = [defs.get(id(v)) for v in terms]
        if len(losses) < 2 or any(n is None or n.op is not _mse.op or any(c is not None for c in n.casts)
                                  or uses[id(n.value)] != 1 or id(n.value) in keep for n in losses):
            return None
        reductions = {n.params.get("reduction") for n in losses}
        spans = [_axis_slice(defs.get(id(n.inputs[0])), 0) for n in losses]
        if len(reductions) != 1 or not reductions <= {"mean", "sum"} or None in spans or \
                len({id(sp[0]) for sp in spans}) != 1:
            return None
        order = sorted(range(len(losses)), key=lambda k: spans[k][1])
        whole, edges = spans[0][0], [spans[k][1:] for k in order]
        targets, preds = [losses[k].inputs[1] for k in order], [losses[k].inputs[0] for k in order]
        sizes = {int(np.size(p.array)) for p in preds}
        if edges[0][0] != 0 or edges[-1][1] != whole.array.shape[0] or \
                any(e[1] != f[0] for e, f in zip(edges, edges[1:])) or (reductions == {"mean"} and len(sizes) != 1) or \
                any((t.kind not in ("input", "const") and id(t) not in data) or np.shape(t.array) != p.shape or
                    t.array.dtype != whole.array.dtype for t, p in zip(targets, preds)):
            return None
        joined = self.concat(targets, 0, top.scope)
        total = self.new_node(_mse.op, [whole, joined.value], {"reduction": "sum"}, top.scope,
                              whole.requires_grad or joined.value.requires_grad)
        if reductions == {"sum"}:
            return [joined, self.renamed(total, top)]
        size = sizes.pop()                        # divided by a Python int, as the mean was (not a 0-d int64)
        scale = self.Value("number", repr(size), np.asarray(size), number=size)
        mean = self.Node(None, _ops.div.op, _ops.div.op.forward, [total.value, scale], [None, None],
                         (total.out, size), {}, {}, top.scope, None)
        mean.out = np.asarray(np.true_divide(total.out, size))
        return [joined, total, self.renamed(mean, top)]

    def renamed(self, node, like):
        """`node` under the name and value of `like` (so every use of `like` reads it)."""
        new = self.Node(like.k, node.op, node.fn, node.inputs, node.casts, node.datas, node.params, node.dyn,
                        like.scope, like.record)
        new.out, new.value = node.out, like.value
        return new

    def slice_of_value(self, parent, index, scope):
        return self.new_node(_ops.getitem.op, (parent,), {"index": index}, scope, parent.requires_grad)

    @staticmethod
    def _splice(nodes, before, replaced):
        out = []
        for n in nodes:
            out += before.get(id(n), ())
            out.append(replaced.get(id(n), n))
        return out


def _data_nodes(nodes):
    """{id(value): node} of the nodes computed from inputs and constants only (no parameter, no random
    draw): pure functions of the call's data, which may move earlier in the program."""
    data = {}
    for n in nodes:
        if n.value.requires_grad or any(d is not None for d in n.dyn.values()):
            continue
        if all(v.kind in ("input", "const", "number") and not v.requires_grad or id(v) in data for v in n.inputs):
            data[id(n.value)] = n
    return data


def _dependents(nodes, members):
    """The nodes computed from any of `members` (members included), in program order: through inputs,
    detached copies (aliases) and values inside op parameters alike."""
    reached, out = {id(m.value) for m in members}, []
    for n in nodes:
        if id(n.value) in reached or any(u in reached for u in _sources(n)):
            reached.add(id(n.value))
            out.append(n)
    return out


def _sources(n):
    """ids of the values a node reads (an alias read as the value it copies), parameters' values included."""
    return [u for v in list(n.inputs) + [x for d in n.dyn.values() if d is not None for x in _flat(d)]
            for u in _sources_of(v)]


def _sources_of(v):
    while v.kind == "alias":
        v = v.node
    return [id(v)]


def _ancestors(values, data):
    """ids of the data-node values among `values` and everything they are computed from."""
    seen, todo = set(), [v for v in values if id(v) in data]
    while todo:
        v = todo.pop()
        if id(v) not in seen:
            seen.add(id(v))
            todo += [u for u in data[id(v)].inputs if id(u) in data]
    return seen


_PURE = _BINARY | _UNARY | {_ops.getitem.op, _ops.matmul.op}


def _same_computation_key(n):
    """A key equal for two nodes computing the same op of the same values with the same params, or None."""
    if n.op not in _PURE or any(d is not None for d in n.dyn.values()) or any(v.kind == "draw" for v in n.inputs):
        return None
    params = tuple(sorted((k, repr(v)) for k, v in n.params.items()))
    if n.op is _ops.getitem.op and not is_basic(n.params.get("index")):
        return None
    return (n.op, tuple(id(v) for v in n.inputs), tuple(n.casts), params)


def _axis_slice(node, axis=-1):
    """(parent value, start, stop) when `node` is a getitem slicing one axis of its input (the last: x[...,
    start:stop]; 0: x[start:stop]), else None."""
    if node is None or node.op is not _ops.getitem.op or set(node.params) != {"index"} \
            or node.dyn.get("index") is not None:
        return None
    index, parent = node.params["index"], node.inputs[0]
    parts = index if isinstance(index, tuple) else (index,)
    nd = np.ndim(parent.array)
    if nd == 0:
        return None
    parts = parts + (slice(None),) * (nd - len(parts)) if axis == 0 else parts
    axis %= nd
    if len(parts) != nd or any(type(p) is not slice or p != slice(None) for j, p in enumerate(parts) if j != axis) \
            or type(parts[axis]) is not slice or parts[axis].step not in (None, 1):
        return None
    a, b, _ = parts[axis].indices(parent.array.shape[axis])
    return (parent, a, b) if b > a else None


def _adjacent_runs(members):
    """Maximal runs (of two or more) of members whose slices are side by side in every sliced input."""
    slots = [j for j, p in enumerate(members[0][1]) if len(p) == 3]
    ordered = sorted(members, key=lambda m: m[1][slots[0]][1])
    runs, run = [], [ordered[0]]
    for m in ordered[1:]:
        prev = run[-1]
        if all(m[1][j][1] == prev[1][j][2] for j in slots) and m[1][slots[0]][1] != prev[1][slots[0]][1]:
            run.append(m)
        else:
            runs.append(run)
            run = [m]
    runs.append(run)
    return [r for r in runs if len(r) > 1]


def _drop_unused_slices(nodes, keep):
    """Without the getitem nodes whose values nothing uses any more (slices the fusions replaced)."""
    used, out = set(keep), []
    for n in reversed(nodes):
        if n.op is _ops.getitem.op and id(n.value) not in used:
            continue
        out.append(n)
        used.update(id(v) for v in n.inputs)
        used.update(_sources(n))
    return out[::-1]


def _flat(d):
    return [d] if not isinstance(d, tuple) else [x for e in d if e is not None for x in _flat(e)]
