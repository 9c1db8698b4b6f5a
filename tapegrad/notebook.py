"""Rich notebook displays: tables for a Tensor, a Tape (its records with module and time-step columns) and a
Module (its parameters). Jupyter calls `_repr_html_` / `_repr_markdown_`; Tape and Module have them, and a
Tensor gets them with

    Tensor._repr_html_, Tensor._repr_markdown_ = notebook.tensor_html, notebook.tensor_markdown
"""
import html

import numpy as np

__all__ = ["table_html", "table_markdown", "tensor_html", "tensor_markdown", "tape_html", "tape_markdown",
           "module_html", "module_markdown", "tape_table", "module_table", "tensor_table", "MAX_ROWS"]

MAX_ROWS = 200          # a longer tape shows its first and last rows, with a count of those left out


def table_html(head, rows, caption=None):
    """An HTML table of string cells."""
    th = "".join(f"<th>{html.escape(str(c), quote=False)}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c), quote=False)}</td>" for c in r) + "</tr>" for r in rows)
    cap = f"<caption>{html.escape(caption, quote=False)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def table_markdown(head, rows, caption=None):
    """A GitHub-flavoured markdown table of string cells ('|' escaped)."""
    def cell(c):
        return str(c).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cell(c) for c in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return (f"**{caption}**\n\n" if caption else "") + "\n".join(lines)


def _displays(table):
    """The (html, markdown) display functions of `table(obj) -> (caption, head, rows)`."""
    def as_html(obj):
        caption, head, rows = table(obj)
        return table_html(head, rows, caption)

    def as_markdown(obj):
        caption, head, rows = table(obj)
        return table_markdown(head, rows, caption)
    return as_html, as_markdown


def _clip(rows):
    if len(rows) <= MAX_ROWS:
        return rows
    half = MAX_ROWS // 2
    gap = [f"... {len(rows) - 2 * half} more"] + [""] * (len(rows[0]) - 1)
    return rows[:half] + [gap] + rows[-half:]


# -- Tensor ----------------------------------------------------------------------------------------------

def tensor_table(t):
    """(caption, head, rows) describing a Tensor: name, shape, dtype, grad, where it was recorded, values."""
    node = getattr(t, "_node", None)
    scope = getattr(node, "scope", None)
    rows = [("name", t.name or "-"), ("shape", str(t.shape)), ("dtype", str(t.dtype)),
            ("requires_grad", str(t.requires_grad)),
            ("made by", f"{node.op} (record %{node.index})" if node is not None else "leaf"),
            ("scope", repr(scope) if scope is not None else "-"),
            ("grad", "-" if getattr(t, "grad", None) is None else f"{np.shape(t.grad)}"),
            ("values", np.array2string(np.asarray(t.data), threshold=20, edgeitems=3, precision=4))]
    return "Tensor", ("field", "value"), rows


tensor_html, tensor_markdown = _displays(tensor_table)


# -- Tape ------------------------------------------------------------------------------------------------

def tape_table(tape):
    """(caption, head, rows): one row per record, with its inputs, shape, dtype, module path and time step."""
    from .tape import Record
    numbering = {r: i for i, r in enumerate(tape.records)}

    def ref(p):
        if isinstance(p, Record):
            return f"%{numbering.get(p, p.index)}"
        return "const" if p is None else p.name or f"<{p.shape} {p.dtype}>"
    rows = []
    for i, rec in enumerate(tape.records):
        scope = rec.scope
        rows.append([f"%{i}", rec.op, ", ".join(ref(p) for p in rec.parents), str(rec.shape), str(rec.dtype),
                     scope.path if scope is not None and scope.path else "",
                     "" if scope is None or scope.step is None else str(scope.step)])
    steps = {r[-1] for r in rows if r[-1]}
    caption = f"Tape: {len(rows)} records" + (f" over {len(steps)} time steps" if steps else "")
    return caption, ("#", "op", "inputs", "shape", "dtype", "module", "t"), _clip(rows)


tape_html, tape_markdown = _displays(tape_table)


# -- Module ----------------------------------------------------------------------------------------------

def module_table(module):
    """(caption, head, rows): one row per parameter (dotted name, shape, dtype, size, grad)."""
    rows = [[name, str(p.shape), str(p.dtype), f"{p.size:,}", "-" if p.grad is None else "yes"]
            for name, p in module.named_parameters()]
    extra = module.extra_repr()
    caption = f"{type(module).__name__}({extra}): {module.num_parameters():,} parameters"
    return caption, ("parameter", "shape", "dtype", "size", "grad"), _clip(rows)


module_html, module_markdown = _displays(module_table)
