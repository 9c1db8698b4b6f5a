"""Where things go: time steps side by side in time order, sequences in rows, parameters in a row of their own.

Inside a step values flow across the ranks (bottom to top for a left-to-right timeline); state and
parameter edges do not constrain ranks, and the boxes playing the same part at every step stand at
the same height above their step's anchor, so the steps of a run line up. The anchors, one below each
step, are chained by flat edges: that fixes the time order. A run that starts from another's final
state (a decoder after its encoder) continues that run's row; any other run (a second layer, a
backward direction) gets a row above the rows before it.
"""


class Slot:
    """One place on a run's timeline: a step's boxes (or the elided box) and the anchor below them."""
    __slots__ = ("anchor", "boxes", "step")

    def __init__(self, anchor, boxes, step):
        self.anchor, self.boxes, self.step = anchor, boxes, step


def timeline(picture, clustered):
    """run index -> its slots in time order (kept steps, with the elided box where the middle steps were)."""
    slots = {}
    for run in picture.runs:
        row, elided = [], clustered.get((run.index, None))
        for step in run.steps:
            boxes = clustered.get((run.index, step))
            if boxes:
                row.append(Slot(f"a{run.index}_t{step}", boxes, step))
            elif elided and not any(s.step is None for s in row):
                row.append(Slot(f"a{run.index}_e", elided, None))
        slots[run.index] = row
    return slots


def rows(runs):
    """Run indices grouped into rows: a run that starts from another's final state continues its row."""
    out, row_of = [], {}
    for run in runs:
        if run.follows is not None:
            row_of[run.index] = row_of[run.follows]
            out[row_of[run.index]].append(run.index)
        else:
            row_of[run.index] = len(out)
            out.append([run.index])
    return out


def levels(picture):
    """How far above its step's anchor each box is to sit: the same for the boxes that play the same
    part at every step of a run, so the steps line up (the longest path up to that part, at any step).
    At cell detail the elided box sits level with the cells its state flows into; at op detail right
    above its anchor (raising it there trips Graphviz's ranking).
    """
    below = {}
    for a in picture.arrows:
        if a.kind != "state" and a.src.cluster == a.dst.cluster and a.src is not a.dst:
            below.setdefault(a.dst, []).append(a.src)
    height = {}

    def up(box):                              # longest path from the bottom of its step
        if box not in height:
            height[box] = 1
            height[box] = 1 + max((up(b) for b in below.get(box, ())), default=0)
        return height[box]

    placed = [b for b in picture.boxes if b.cluster is not None and b.cluster[1] is not None]
    level = {}
    for box in placed:
        key = (box.cluster[0], box.key)
        level[key] = max(level.get(key, 1), up(box))
    out = {box: level[(box.cluster[0], box.key)] for box in placed}
    if picture.detail == "cells":
        for a in picture.arrows:
            if a.kind == "state" and a.src.kind == "elided" and a.dst in out:
                out[a.src] = max(out.get(a.src, 1), out[a.dst])
    return out


def sources_and_sinks(arrows):
    """Boxes with no incoming / no outgoing constraining arrow inside their own cluster."""
    has_in, has_out = set(), set()
    for a in arrows:
        if a.kind != "state" and a.src.cluster == a.dst.cluster and a.src is not a.dst:
            has_in.add(a.dst)
            has_out.add(a.src)
    return has_in, has_out
