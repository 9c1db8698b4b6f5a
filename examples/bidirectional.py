"""Bidirectional LSTM: a tagging task that needs the future, against a unidirectional LSTM of the same size.

Task. A sequence of --length symbols, each drawn uniformly and independently from --symbols symbols.
Tag every position t with 1 if its symbol occurs again later in the sequence (at some t' > t), else 0.

Models (the lecture's "two independent LSTMs, one for the forward sequence and one for the reverse"):
  bidirectional   Bidirectional(LSTMCell(K, H), LSTMCell(K, H)) -> Linear(2H, 2) on every step
  unidirectional  LSTMCell(K, H_u) -> Linear(H_u, 2), with H_u chosen so that its weight count is the
                  closest to the bidirectional net's (the same parameter budget)
Inputs are one-hot vectors (K = --symbols); softmax cross-entropy over the two tags; Adam; every step a
fresh random batch. Reported: tag accuracy on a fixed held-out set of --test sequences, beside the best
accuracy any causal model can reach: the future is independent of the past, so at position t a causal
model can only guess the likelier tag, right with probability max(p_t, 1 - p_t) where
p_t = 1 - (1 - 1/K)^(T - 1 - t).
"""
import numpy as np
from common import example_parser, finish, out_dir, plot_lines, progress, write_csv

import tapegrad as tg
from tapegrad import nn
from tapegrad.optim import Adam


def make_batch(rng, batch, length, symbols):
    """(symbols (batch, T) ints, tags (batch, T) ints): tag 1 where the symbol occurs again later."""
    x = rng.integers(0, symbols, (batch, length))
    later = x[:, :, None] == x[:, None, :]                       # later[b, t, s]: x_t == x_s
    tags = np.triu(later, k=1).any(axis=2).astype(np.int64)      # ... for some s > t
    return x, tags


def causal_bound(length, symbols):
    """The best expected tag accuracy of any model that sees only x_0 .. x_t at position t."""
    p = 1 - (1 - 1 / symbols) ** (length - 1 - np.arange(length))
    return float(np.maximum(p, 1 - p).mean())


class Tagger(nn.Module):
    """One-hot symbols -> encoder (a Bidirectional pair or a one-layer StackedRNN) -> Linear(features, 2)."""

    def __init__(self, encoder, features, symbols, rng):
        super().__init__()
        self.symbols = symbols
        self.encoder = encoder
        self.head = nn.Linear(features, 2, rng=rng)

    def forward(self, x):
        xs = tg.one_hot(x, self.symbols)
        hs, _ = self.encoder(xs)
        return self.head(hs)


def lstm_weights(inputs, hidden):
    return 4 * (inputs * hidden + hidden * hidden + hidden)


def build(kind, symbols, hidden, rng):
    if kind == "bidirectional":
        pair = nn.Bidirectional(nn.LSTMCell(symbols, hidden, rng=rng), nn.LSTMCell(symbols, hidden, rng=rng))
        return Tagger(pair, 2 * hidden, symbols, rng)
    budget = 2 * lstm_weights(symbols, hidden) + (2 * hidden + 1) * 2
    h = min(range(1, 4 * hidden), key=lambda h: abs(lstm_weights(symbols, h) + (h + 1) * 2 - budget))
    return Tagger(nn.StackedRNN([nn.LSTMCell(symbols, h, rng=rng)]), h, symbols, rng)


def accuracy(model, x, tags):
    with tg.no_grad():
        return float((model(x).data.argmax(-1) == tags).mean())


def main(argv=None):
    parser = example_parser(__doc__, "out/bidirectional")
    parser.add_argument("--symbols", type=int, default=10, help="alphabet size K (default 10)")
    parser.add_argument("--length", type=int, default=16, help="sequence length T (default 16)")
    parser.add_argument("--hidden", type=int, default=16, help="units per direction (default 16)")
    parser.add_argument("--steps", type=int, default=1500, help="training steps, one fresh batch each (default 1500)")
    parser.add_argument("--batch", type=int, default=64, help="sequences per batch (default 64)")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    parser.add_argument("--test", type=int, default=2000, help="held-out sequences (default 2000)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.test = 250, 500
    out = out_dir(args.out)
    rng = np.random.default_rng(args.seed)
    test_x, test_tags = make_batch(np.random.default_rng(args.seed + 1), args.test, args.length, args.symbols)
    bound = causal_bound(args.length, args.symbols)
    print(f"T = {args.length}, K = {args.symbols}: base rate of tag 1 {test_tags.mean():.3f}, "
          f"best causal accuracy {bound:.3f}")

    results, curves = {"causal_bound": bound, "steps": args.steps}, {}
    for kind in ("bidirectional", "unidirectional"):
        model = build(kind, args.symbols, args.hidden, rng)
        opt = Adam(model.parameters(), lr=args.lr)
        curves[kind] = []
        for _ in progress(range(args.steps), f"{kind} steps", every=max(1, args.steps // 5)):
            x, tags = make_batch(rng, args.batch, args.length, args.symbols)
            opt.zero_grad()
            loss = tg.cross_entropy(model(x), tags)
            loss.backward()
            opt.step()
            curves[kind].append(loss.item())
        acc = accuracy(model, test_x, test_tags)
        results[kind] = {"weights": model.num_parameters(), "test_accuracy": acc, "final_loss": curves[kind][-1]}
        print(f"{kind:15s} {model.num_parameters():5d} weights  held-out tag accuracy {acc:.4f}")

    write_csv(out / "loss.csv", {"step": np.arange(1, args.steps + 1), **curves})
    plot_lines(out / "loss.png", curves, title="training cross-entropy", xlabel="step", logy=True)
    bi, uni = results["bidirectional"]["test_accuracy"], results["unidirectional"]["test_accuracy"]
    checks = [(bi > uni + 0.1, f"bidirectional accuracy {bi:.3f} is not well above unidirectional {uni:.3f}"),
              (bi > bound, f"bidirectional accuracy {bi:.3f} does not beat the causal bound {bound:.3f}")]
    return finish(args, results, checks)


if __name__ == "__main__":
    main()
