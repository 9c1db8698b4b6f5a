"""Sequences of different lengths in one zero-padded batch (TensorFlow tutorial seed 004, #6).

The tutorial's batch: 4 instances, 2 steps of 3 inputs; instance 2 has one step and is padded
with a zero vector, and `sequence_length` = [2, 1, 2, 2] (the values of its code listing, which
the seed's text omits; Geron, Hands-On Machine Learning, ch. 14):

    [[[0, 1, 2], [9, 8, 7]],
     [[3, 4, 5], [0, 0, 0]],     <- padding
     [[6, 7, 8], [6, 5, 4]],
     [[9, 0, 1], [3, 2, 1]]]

An RNNCell(3, 5) (tanh, the tutorial's BasicRNNCell with 5 units) is run by
`unroll(cell, X, lengths=[2, 1, 2, 2])`, TensorFlow's dynamic_rnn with sequence_length. What
the tutorial shows, checked here: the outputs are zero vectors past each sequence's length, and
the final state of each instance is its output at its last valid step (not the output after
the padding). And the stronger claim behind it: every instance's outputs, final state, and
gradients equal those of running that sequence alone, unpadded, through the same cell
(gradients of sum(final state^2) with respect to the cell's weights add up over the instances;
the padded input gets a zero gradient).
"""
import numpy as np
from common import example_parser, finish, out_dir, write_csv
from tutorial_shared import parse, side_by_side

import tapegrad as tg
from tapegrad.nn import RNNCell, unroll

X_BATCH = np.array([
    [[0, 1, 2], [9, 8, 7]],     # instance 0
    [[3, 4, 5], [0, 0, 0]],     # instance 1 (padded with a zero vector)
    [[6, 7, 8], [6, 5, 4]],     # instance 2
    [[9, 0, 1], [3, 2, 1]],     # instance 3
], dtype=np.float32)
SEQ_LENGTH = np.array([2, 1, 2, 2])


def run(cell, X, lengths=None):
    """outputs, final state and d(sum(state^2))/d(W_x, W_h, b, X) for the batch X."""
    X = tg.tensor(X, requires_grad=True)
    outputs, state = unroll(cell, X, lengths=lengths)
    grads = tg.grad((state * state).sum(), [cell.W_x, cell.W_h, cell.b, X])
    return outputs.data, state.data, [g.data for g in grads[:3]], grads[3].data


def main(argv=None):
    parser = example_parser(__doc__, "out/variable_length")
    args = parse(parser, argv, quick={})
    out = out_dir(args.out)
    cell = RNNCell(3, 5, rng=args.seed)

    outputs, states, grads, dX = run(cell, X_BATCH, SEQ_LENGTH)
    print(f"outputs (4 instances x 2 steps x 5 neurons), sequence_length = {SEQ_LENGTH.tolist()}:\n"
          f"{np.array2string(outputs, precision=5, suppress_small=True)}\n")
    last_valid = outputs[np.arange(4), SEQ_LENGTH - 1]
    side_by_side("final states vs output at each instance's last valid step", states, last_valid,
                 ("states", "outputs[i, len_i - 1]"))

    alone = [run(cell, X_BATCH[i:i + 1, :n]) for i, n in enumerate(SEQ_LENGTH)]
    padded_outputs = np.stack([np.pad(o[0], ((0, 2 - n), (0, 0))) for (o, _, _, _), n in zip(alone, SEQ_LENGTH)])
    side_by_side("outputs at t = 1: batch with lengths vs each sequence alone (zero past its end)",
                 outputs[:, 1], padded_outputs[:, 1], ("batch", "alone"))
    summed = [sum(a[2][k] for a in alone) for k in range(3)]
    diffs = {
        "outputs_past_length": float(np.abs(outputs[1, 1]).max()),
        "state_vs_last_valid_output": float(np.abs(states - last_valid).max()),
        "outputs_vs_alone": float(np.abs(outputs - padded_outputs).max()),
        "states_vs_alone": float(np.abs(states - np.concatenate([a[1] for a in alone])).max()),
        "grad_of_padding": float(np.abs(dX[1, 1]).max()),
    }
    grad_rel = float(max(np.abs(g - s).max() / np.abs(s).max() for g, s in zip(grads, summed)))
    for k, v in diffs.items():
        print(f"max |.| {k}: {v:.1e}")
    print(f"weight gradients of the batch vs summed over the sequences run alone: {grad_rel:.1e} (relative, "
          "float32; the batch adds the same products in a different order)")
    write_csv(out / "outputs.csv", {"instance": np.repeat(np.arange(4), 10), "t": np.tile(np.repeat([0, 1], 5), 4),
                                    "neuron": np.tile(np.arange(5), 8), "batch": outputs, "alone": padded_outputs})
    results = {**diffs, "grads_rel_diff": grad_rel, "sequence_length": SEQ_LENGTH}
    # Exact by construction: the outputs past a length are set to zero, the final state is selected from the
    # outputs, the padding's gradient is masked. Batch vs alone goes through BLAS products of other shapes,
    # whose float32 sums may round differently (6e-8 seen): within a few eps per term summed (3 inputs + 5 units).
    tol = float(np.finfo(np.float32).eps) * 4 * (3 + 5) * max(1.0, float(np.abs(X_BATCH).max()))
    exact = ("outputs_past_length", "state_vs_last_valid_output", "grad_of_padding")
    checks = [(v == 0.0, f"{k} is {v:.1e}, not 0") if k in exact else (v <= tol, f"{k} is {v:.1e} > {tol:.1e}")
              for k, v in diffs.items()]
    results["float32_tolerance"] = tol
    return finish(args, results, checks + [(grad_rel < 1e-5, f"gradients differ by {grad_rel:.1e} (relative)")])


if __name__ == "__main__":
    main()
