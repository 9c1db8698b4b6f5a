"""A three-layer deep RNN, and the LSTM forget-gate bias on a long lag (TensorFlow tutorial seed 004, #9).

Part 1 (the tutorial's MultiRNNCell): three BasicRNNCells of 100 neurons stacked with
`StackedRNN`, run on a random batch of 2 sequences of 5 steps of 2 inputs (uniform on [0, 1), as
the tutorial's listing, which the seed's text omits; Geron, Hands-On Machine Learning, ch. 14).
`states` holds one final state per layer, each (batch, n_neurons) = (2, 100); the top layer's
equals the last output; concatenated they are the state_is_tuple=False tensor (2, 300).

Part 2 (the tutorial: "TensorFlow initializes bf to a vector full of 1s instead of 0s. This
prevents forgetting everything at the beginning of training"). The task, remember the first
symbol: a sequence of T = 30 steps over 9 input channels (one-hot). Step 0 carries the class
c in {0, 1, 2, 3} on channels 0-3; steps 1..T-2 each carry a random distractor on channels
4-7; the last step carries the query flag, channel 8. The network must output c after the
last step: LSTMCell(9, 32) unrolled, Linear(32, 4) on the final h, softmax cross-entropy.
Chance is 25 %. Two LSTMs that differ only in the forget-gate bias's initial value (1.0 and
0.0; every other weight drawn identically) are trained with Adam (lr 0.01, batch 32, gradients
clipped to norm 1) for 1,500 updates each, over the same seeds (3) and the same data stream;
accuracy on 1,000 held-out sequences is recorded every 25 updates. --quick: T = 20, 150 updates,
one seed.
"""
import numpy as np
from common import example_parser, finish, out_dir, plot_lines, write_csv
from tutorial_shared import parse, training_steps

import tapegrad as tg
from tapegrad.nn import Linear, LSTMCell, Module, RNNCell, StackedRNN, unroll
from tapegrad.optim import Adam, clip_grad_norm

CLASSES, DISTRACTORS = 4, 4
CHANNELS = CLASSES + DISTRACTORS + 1


def multi_rnn_cell(seed):
    """Part 1: the tutorial's three stacked BasicRNNCells; prints and returns the per-layer final states."""
    rng = np.random.default_rng(seed)
    n_inputs, n_steps, n_neurons, n_layers = 2, 5, 100, 3
    layers = [RNNCell(n_inputs if l == 0 else n_neurons, n_neurons, rng=rng) for l in range(n_layers)]
    multi_layer_cell = StackedRNN(layers)
    X_batch = rng.random((2, n_steps, n_inputs)).astype(np.float32)
    outputs, states = multi_layer_cell(X_batch)
    print(f"outputs {outputs.shape}; states: a list of {len(states)} final states, one per layer")
    for l, s in enumerate(states):
        print(f"  layer {l}: shape {s.shape}, first values {np.array2string(s.data[:, :4], precision=4)}")
    flat = tg.concat(states, axis=-1)
    top_gap = float(np.abs(states[-1].data - outputs.data[:, -1]).max())
    print(f"state_is_tuple=False equivalent: concat -> {flat.shape}; top layer's state vs last output: "
          f"max |diff| = {top_gap:.1e}")
    return [list(s.shape) for s in states], top_gap


def first_symbol_data(rng, batch, T):
    """(x (batch, T, CHANNELS) one-hot, labels (batch,)): class at step 0, distractors, query at T-1."""
    labels = rng.integers(CLASSES, size=batch)
    x = np.zeros((batch, T, CHANNELS), np.float32)
    rows = np.arange(batch)
    x[rows, 0, labels] = 1
    distractors = CLASSES + rng.integers(DISTRACTORS, size=(batch, T - 2))
    x[rows[:, None], np.arange(1, T - 1), distractors] = 1
    x[:, T - 1, CHANNELS - 1] = 1
    return x, labels


class LastSymbolReader(Module):
    """LSTMCell(CHANNELS, H) over the sequence, Linear(H, CLASSES) on the final h."""

    def __init__(self, hidden, forget_bias, seed):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.lstm = LSTMCell(CHANNELS, hidden, forget_bias=forget_bias, rng=rng)
        self.head = Linear(hidden, CLASSES, rng=rng)

    def forward(self, x):
        _, (h, _) = unroll(self.lstm, x)
        return self.head(h)


def train_lstm(forget_bias, seed, args):
    """Train one LSTM; returns (losses per update, accuracies every `eval_every` updates)."""
    model = LastSymbolReader(args.hidden, forget_bias, seed)
    opt = Adam(model.parameters(), lr=args.lr)
    data_rng = np.random.default_rng(1000 + seed)             # the same stream for both biases
    x_test, y_test = first_symbol_data(np.random.default_rng(2000 + seed), 1000, args.length)
    losses, accs = [], []
    for i in training_steps(args.iterations, f"forget bias {forget_bias}, seed {seed}: update", losses, lines=4):
        x, y = first_symbol_data(data_rng, args.batch, args.length)
        opt.zero_grad()
        loss = tg.cross_entropy(model(x), y)
        loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if (i + 1) % args.eval_every == 0:
            with tg.no_grad():
                accs.append(float((model(x_test).data.argmax(-1) == y_test).mean()))
    return np.array(losses), np.array(accs)


def main(argv=None):
    parser = example_parser(__doc__, "out/deep_rnn")
    parser.add_argument("--length", type=int, default=30, help="sequence length T of part 2 (default 30)")
    parser.add_argument("--hidden", type=int, default=32, help="LSTM units (default 32)")
    parser.add_argument("--iterations", type=int, default=1500, help="Adam updates per run (default 1500)")
    parser.add_argument("--batch", type=int, default=32, help="sequences per update (default 32)")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    parser.add_argument("--seeds", type=int, default=3, help="runs per forget bias (default 3)")
    parser.add_argument("--eval-every", type=int, default=25, help="updates between accuracy evaluations")
    args = parse(parser, argv, quick=dict(iterations=150, seeds=1, length=20))
    out = out_dir(args.out)
    state_shapes, top_gap = multi_rnn_cell(args.seed)

    curves = {}
    for bias in (1.0, 0.0):
        runs = [train_lstm(bias, args.seed + k, args) for k in range(args.seeds)]
        curves[bias] = (np.mean([r[0] for r in runs], 0), np.array([r[1] for r in runs]))
    evals = np.arange(1, len(curves[1.0][1][0]) + 1) * args.eval_every
    final = {b: curves[b][1][:, -1] for b in curves}
    for b in curves:
        print(f"forget bias {b}: final test accuracy per seed {np.round(final[b], 3).tolist()}, "
              f"mean {final[b].mean():.3f}; mean accuracy over training {curves[b][1].mean():.3f}")
    write_csv(out / "forget_bias_accuracy.csv", {"update": evals, **{f"accuracy_bias_{b}": curves[b][1].mean(0)
                                                                      for b in curves}})
    write_csv(out / "forget_bias_loss.csv", {"update": np.arange(1, args.iterations + 1),
                                             **{f"loss_bias_{b}": curves[b][0] for b in curves}})
    plot_lines(out / "forget_bias_accuracy.png", {f"forget bias {b}": curves[b][1].mean(0) for b in curves},
               title=f"remember the first symbol, T = {args.length} (mean of {args.seeds} seeds)",
               xlabel=f"update / {args.eval_every}", ylabel="test accuracy")
    plot_lines(out / "forget_bias_loss.png", {f"forget bias {b}": curves[b][0] for b in curves},
               title="training loss", xlabel="update", logy=True)
    results = {"state_shapes": state_shapes, "top_state_vs_last_output": top_gap, "length": args.length,
               "iterations": args.iterations, "seeds": args.seeds,
               **{f"final_accuracy_bias_{b}": final[b].mean() for b in curves},
               **{f"final_accuracy_bias_{b}_per_seed": final[b] for b in curves},
               **{f"mean_accuracy_over_training_bias_{b}": curves[b][1].mean() for b in curves}}
    return finish(args, results, [
        (state_shapes == [[2, 100]] * 3 and top_gap == 0,
         "MultiRNNCell states are not 3 x (2, 100) ending in the output"),
        (final[1.0].mean() >= 0.9, f"forget bias 1.0 reaches only {final[1.0].mean():.3f} accuracy (chance 0.25)"),
    ])


if __name__ == "__main__":
    main()
