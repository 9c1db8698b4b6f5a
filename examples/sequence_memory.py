"""Memorise ten digit sequences with a recurrent network (ANNT seed: "Sequence prediction (one-hot encoded)").

Task (the seed's). Ten sequences of 11 digits; the first digit names the sequence, the middle is one of two
patterns, and the last digit repeats the first:

    1 0 1 2 3 4 5 6 7 8 1      6 0 1 2 4 4 4 6 7 8 6
    2 0 1 2 3 4 5 6 7 8 2      7 0 1 2 4 4 4 6 7 8 7
    3 0 1 2 3 4 5 6 7 8 3      8 0 1 2 4 4 4 6 7 8 8
    4 0 1 2 3 4 5 6 7 8 4      9 0 1 2 4 4 4 6 7 8 9
    5 0 1 2 3 4 5 6 7 8 5      0 0 1 2 4 4 4 6 7 8 0

Each sequence gives 10 transitions: input digit t (one-hot, 10 values) -> target digit t + 1, t = 0..9, so
10 sequences x 10 steps = the seed's 100 training samples, all in one batch with sequence length 10 (the
state starts at zero for each sequence). After '2' the network must answer '3' or '4', and at the end it must
recall the first digit, eight or nine steps back: only the recurrent state can tell.

Model (the seed's): recurrent layer of 20 (--cell rnn | lstm | gru) -> Linear 10 -> softmax cross-entropy,
summed over the 100 samples (ANNT's SetAverageWeightGradients(false)); Adam, lr 0.01, 150 epochs (one
update per epoch). The cost printed is the mean per sample, as the seed prints it.

Result: "Produced sequence" is the first digit followed by the network's argmax at each of the 10 steps,
fed the true digits (the seed's ShowPredictedSequences); a sequence is Good when all ten match. The seed
reaches 10/10 (basic RNN shown). The full run takes seconds, so --quick is the same run, asserting 10/10.
Outputs: cost_<cell>.csv/.png, graph_<cell>.svg (the tape of the trained network's loss, rolled: the cell
once, its state as a self-edge x10; needs Graphviz), results.json.
Training runs through tg.compile (the same batch every epoch, so one program; --eager runs without it):
the whole run takes about 1.1 s either way, most of it start-up (docs/performance.md).
"""
import numpy as np
from annt_shared import RecurrentNet, save_graph
from common import example_parser, finish, out_dir, plot_lines, write_csv

import tapegrad as tg
from tapegrad import nn
from tapegrad.optim import Adam

SEQUENCES = np.array([[d, 0, 1, 2, 3, 4, 5, 6, 7, 8, d] for d in (1, 2, 3, 4, 5)]
                     + [[d, 0, 1, 2, 4, 4, 4, 6, 7, 8, d] for d in (6, 7, 8, 9, 0)])
CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


def samples(sequences):
    """(inputs (N, 10, 10) one-hot, targets (N, 10) ints): digit t -> digit t + 1 of every sequence."""
    return tg.one_hot(sequences[:, :-1], 10), sequences[:, 1:]


def show_predictions(model, sequences):
    """Print the seed's target/produced block for every sequence; returns the number of Good sequences."""
    inputs, _ = samples(sequences)
    with tg.no_grad():
        produced = model(inputs)[0].data.argmax(-1)
    good = 0
    for seq, out in zip(sequences, produced):
        target = "".join(map(str, seq))
        made = str(seq[0]) + "".join(map(str, out))
        good += made == target
        print(f"Target sequence:   {target}\nProduced sequence: {made} {'Good' if made == target else 'Bad'}\n")
    return good


def main(argv=None):
    parser = example_parser(__doc__, "out/sequence_memory")
    parser.add_argument("--cell", choices=sorted(CELLS), default="rnn", help="recurrent layer type (seed: basic RNN)")
    parser.add_argument("--hidden", type=int, default=20, help="recurrent layer size (seed: 20)")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (seed: 0.01)")
    parser.add_argument("--epochs", type=int, default=150, help="training epochs, one batch each (seed: 150)")
    parser.add_argument("--eager", action="store_true", help="train without tg.compile (for timing)")
    args = parser.parse_args(argv)
    out = out_dir(args.out)
    rng = np.random.default_rng(args.seed)
    model = RecurrentNet([CELLS[args.cell](10, args.hidden, rng=rng)], 10, rng=rng)
    opt = Adam(model.parameters(), lr=args.lr)
    inputs, targets = samples(SEQUENCES)

    print(f"Sequence prediction with Recurrent ANN\nLearning rate : {args.lr:.4f}\nEpochs count : {args.epochs}\n"
          f"Recurrent type : {args.cell}\n\nBefore training:")
    good_before = show_predictions(model, SEQUENCES)

    def train_step(inputs, targets):
        loss = tg.cross_entropy(model(inputs)[0], targets, reduction="sum")
        loss.backward()
        return loss

    step = train_step if args.eager else tg.compile(train_step)
    costs = []
    for epoch in range(1, args.epochs + 1):
        opt.zero_grad()
        loss = step(inputs, targets)
        opt.step()
        costs.append(loss.item() / targets.size)
        if epoch % 10 == 0 or epoch == args.epochs:
            print(f"epoch {epoch:3d}/{args.epochs}  cost {costs[-1]:.4f}")
    print("\nAfter training:")
    good = show_predictions(model, SEQUENCES)
    print(f"Good: {good}/{len(SEQUENCES)}")

    write_csv(out / f"cost_{args.cell}.csv", {"epoch": np.arange(1, args.epochs + 1), "cost": costs})
    plot_lines(out / f"cost_{args.cell}.png", {f"{args.cell} cost": costs}, title="sequence memory",
               xlabel="epoch", ylabel="cross-entropy per sample", logy=True)
    # a compiled step returns its loss off the tape, so the graph is of the trained network's loss, recorded eagerly
    save_graph(tg.cross_entropy(model(inputs)[0], targets, reduction="sum"), out / f"graph_{args.cell}.svg")
    results = {"cell": args.cell, "good": good, "good_before": good_before, "sequences": len(SEQUENCES),
               "first_cost": costs[0], "final_cost": costs[-1], "epochs": args.epochs, "lr": args.lr}
    return finish(args, results, [(good == len(SEQUENCES), f"{args.cell}: only {good}/10 sequences reproduced")])


if __name__ == "__main__":
    main()
