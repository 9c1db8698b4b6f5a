"""A character model: a stacked LSTM with skip connections, trained by stateful truncated BPTT, then sampled.

Task (the lecture's last example). Given the characters so far, predict the next one. The lecture trained
two layers of 1024 LSTMs on TensorFlow's C++ source (14 million characters, 103 distinct); the default
corpus here is tapegrad's own Python source (every tapegrad/**/*.py file in path order, joined), or
`--text FILE`. The last --valid fraction of the text is held out.

Model (the lecture's picture, sized for a 2-core machine: --layers 2 --hidden 128 by default; the lecture's
2 x 1024 is `--hidden 1024`): one-hot characters -> LSTM layers, where every layer also reads the input
and the output reads every layer (the lecture's "skip layer connections") -> Linear -> softmax over the
characters. Training: the training text cut into --batch parallel streams, consumed in chunks of --chunk
steps; each chunk starts from the previous chunk's final state, detached (stateful truncated BPTT); Adam,
gradient norm clipped at 5.

Reported: validation bits per character (the mean of -log2 p(next character), the streams run with their
state carried through) against a unigram baseline (the training text's character frequencies, add-one
smoothed), and samples before and after training: from a seed such as "def ", each next character is drawn
from softmax(logits / temperature) and fed back in.
Training runs through tg.compile (the state carried in and out as the step's inputs and outputs; --eager
runs without it): the default run 273 s eager, 195 s compiled (docs/performance.md).
"""
import pathlib

import numpy as np
from common import example_parser, finish, out_dir, plot_lines, progress, write_csv
from lecture_shared import chunk_step, stateful_epoch

import tapegrad as tg
from tapegrad import nn
from tapegrad.optim import Adam

SEEDS = ("def ", "import ", "class ")


def tapegrad_source():
    """tapegrad's own Python source: every .py file below the package, in path order, joined."""
    root = pathlib.Path(tg.__file__).parent
    return "".join(p.read_text() for p in sorted(root.rglob("*.py")))


class CharLSTM(nn.Module):
    """One-hot characters -> LSTM layers with skip connections -> logits over the vocabulary.

    Layer 0 reads the one-hot input x; layer l > 0 reads concat(x, h_{l-1}); the output Linear reads
    concat(h_0, ..., h_{L-1}). forward(ids (batch, T), state=None or one (h, c) per layer) ->
    (logits (batch, T, V), [final state per layer]).
    """

    def __init__(self, vocab, hidden, layers, rng):
        super().__init__()
        self.vocab = vocab
        self.cells = [nn.LSTMCell(vocab + (hidden if i else 0), hidden, rng=rng) for i in range(layers)]
        self.head = nn.Linear(hidden * layers, vocab, rng=rng)

    def forward(self, ids, state=None):
        x = tg.one_hot(ids, self.vocab)
        state = [None] * len(self.cells) if state is None else state
        hs, finals = [], []
        for i, (cell, s) in enumerate(zip(self.cells, state)):
            h, s = nn.unroll(cell, tg.concat([x, hs[-1]], axis=-1) if i else x, s)
            hs.append(h)
            finals.append(s)
        return self.head(tg.concat(hs, axis=-1)), finals


def streams(ids, batch):
    """ids cut into `batch` equally long consecutive streams: (batch, len(ids) // batch)."""
    n = len(ids) // batch
    return ids[:batch * n].reshape(batch, n)


def bits_per_char(model, ids, batch, chunk):
    """Mean -log2 p(next char) over `batch` streams of `ids`, the state carried from chunk to chunk."""
    s = streams(ids, batch)
    state, total = None, 0.0
    with tg.no_grad():
        for start in range(0, s.shape[1] - 1, chunk):
            logits, state = model(s[:, start:start + chunk], state)
            targets = s[:, start + 1:start + chunk + 1]
            total += tg.cross_entropy(logits[:, :targets.shape[1]], targets, reduction="sum").item()
    return total / (s.shape[0] * (s.shape[1] - 1)) / np.log(2)


def unigram_bits(train_ids, valid_ids, vocab):
    counts = np.bincount(train_ids, minlength=vocab) + 1.0
    return float(-np.mean(np.log2(counts[valid_ids] / counts.sum())))


def sample(model, chars, index, seed, n, temperature, rng):
    """`seed` followed by n characters, each drawn from softmax(logits / temperature) and fed back in."""
    with tg.no_grad():
        logits, state = model(np.array([[index[c] for c in seed]]))
        out = []
        for _ in range(n):
            z = logits.data[0, -1].astype(np.float64) / temperature
            p = np.exp(z - z.max())
            out.append(rng.choice(len(chars), p=p / p.sum()))
            logits, state = model(np.array([[out[-1]]]), state)
    return seed + "".join(chars[i] for i in out)


def show_samples(model, chars, index, args, rng, when):
    texts = {seed: sample(model, chars, index, seed, args.sample_length, args.temperature, rng) for seed in SEEDS}
    for seed, text in texts.items():
        print(f"--- {when}, seed {seed!r}, temperature {args.temperature} ---\n{text}\n")
    return texts


def main(argv=None):
    parser = example_parser(__doc__, "out/char_model")
    parser.add_argument("--text", help="training text file (default: tapegrad's own source code)")
    parser.add_argument("--hidden", type=int, default=128, help="LSTM units per layer (default 128; lecture 1024)")
    parser.add_argument("--layers", type=int, default=2, help="LSTM layers (default 2, as the lecture)")
    parser.add_argument("--epochs", type=int, default=12, help="passes over the training text (default 12)")
    parser.add_argument("--batch", type=int, default=32, help="parallel streams (default 32)")
    parser.add_argument("--chunk", type=int, default=64, help="truncated-BPTT chunk length (default 64)")
    parser.add_argument("--lr", type=float, default=0.003, help="Adam learning rate (default 0.003)")
    parser.add_argument("--valid", type=float, default=0.1, help="held-out fraction at the end (default 0.1)")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    parser.add_argument("--sample-length", type=int, default=300, help="characters per sample (default 300)")
    parser.add_argument("--max-chars", type=int, help="use only the first N characters of the text")
    parser.add_argument("--eager", action="store_true", help="train without tg.compile (for timing)")
    args = parser.parse_args(argv)
    if args.quick:
        args.hidden, args.epochs, args.chunk, args.batch, args.max_chars = 48, 1, 32, 16, 40_000
        args.sample_length, args.lr = 120, 0.01
    out = out_dir(args.out)
    rng = np.random.default_rng(args.seed)

    text = pathlib.Path(args.text).read_text() if args.text else tapegrad_source()
    text = text[:args.max_chars] if args.max_chars else text
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = np.array([index[c] for c in text])
    split = int(len(ids) * (1 - args.valid))
    train_ids, valid_ids = ids[:split], ids[split:]
    unigram = unigram_bits(train_ids, valid_ids, len(chars))
    model = CharLSTM(len(chars), args.hidden, args.layers, rng)
    print(f"{len(text):,} characters ({len(chars)} distinct), {len(valid_ids):,} held out; "
          f"{args.layers} x LSTM {args.hidden} with skip connections, {model.num_parameters():,} weights; "
          f"unigram baseline {unigram:.3f} bits/char")

    before = show_samples(model, chars, index, args, rng, "before training")
    train = streams(train_ids, args.batch)
    opt = Adam(model.parameters(), lr=args.lr)
    step = chunk_step(model, tg.cross_entropy)
    step = step if args.eager else tg.compile(step)   # three chunk shapes: the first (no state), the others, the last
    history = {"epoch": [], "train_bpc": [], "valid_bpc": []}
    for epoch in progress(range(1, args.epochs + 1), "epochs", every=1):
        nats = stateful_epoch(step, train[:, :-1], train[:, 1:], args.chunk, opt, clip=5.0)
        valid = bits_per_char(model, valid_ids, min(args.batch, 16), args.chunk)
        for k, v in zip(history, (epoch, nats / np.log(2), valid)):
            history[k].append(v)
        print(f"epoch {epoch}/{args.epochs}  train {nats / np.log(2):.3f} bits/char  validation {valid:.3f} "
              f"bits/char (unigram {unigram:.3f})")
    after = show_samples(model, chars, index, args, rng, "after training")

    write_csv(out / "bits_per_char.csv", history)
    plot_lines(out / "bits_per_char.png", {"train": history["train_bpc"], "validation": history["valid_bpc"],
                                           "unigram": [unigram] * args.epochs},
               title="bits per character", xlabel="epoch")
    (out / "samples.txt").write_text("".join(f"=== {when}, seed {seed!r}, temperature {args.temperature}\n{t}\n\n"
                                             for when, texts in (("before", before), ("after", after))
                                             for seed, t in texts.items()))
    valid = history["valid_bpc"][-1]
    results = {"valid_bpc": valid, "unigram_bpc": unigram, "train_bpc": history["train_bpc"][-1],
               "characters": len(text), "vocabulary": len(chars), "weights": model.num_parameters(),
               "hidden": args.hidden, "layers": args.layers, "epochs": args.epochs,
               "samples_before": before, "samples_after": after}
    return finish(args, results, [(valid < unigram, f"validation {valid:.3f} bits/char is not below the unigram "
                                                    f"baseline {unigram:.3f}")])


if __name__ == "__main__":
    main()
