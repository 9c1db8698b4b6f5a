"""Where things go: time steps side by side in time order, sequences in rows, parameters in a row of their own.

Inside a step values flow across the ranks (bottom to top for a left-to-right timeline); state edges
do not constrain ranks, so every step of a run spans the same ranks and the steps line up. Invisible
anchors, one per step at its bottom, are chained by flat edges: that fixes the time order. A run
whose only input from an earlier run is that run's final state (a decoder after its encoder)
continues the earlier run's row; any other run (a second layer, a backward direction) gets a row
above the rows before it.
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


def rows(picture, slots):
    """Runs grouped into rows: a run that only takes the final state of the run before continues its row."""
    feeds = {}
    for a in picture.arrows:
        s, d = a.src.cluster, a.dst.cluster
        if s is not None and d is not None and s[0] != d[0]:
            feeds.setdefault(d[0], set()).add(s)
    out, row_of = [], {}
    for run in picture.runs:
        sources = feeds.get(run.index, set())
        earlier = {r for r, _ in sources}
        if len(earlier) == 1:
            (prev,) = earlier
            last = slots[prev][-1].step if slots[prev] else None
            if not picture.runs[prev].reverse and sources == {(prev, last)} and prev in row_of:
                row_of[run.index] = row_of[prev]
                out[row_of[prev]].append(run.index)
                continue
        row_of[run.index] = len(out)
        out.append([run.index])
    return out


def sources_and_sinks(arrows):
    """Boxes with no incoming / no outgoing constraining arrow inside their own cluster."""
    has_in, has_out = set(), set()
    for a in arrows:
        if a.kind != "state" and a.src.cluster == a.dst.cluster and a.src is not a.dst:
            has_in.add(a.dst)
            has_out.add(a.src)
    return has_in, has_out
