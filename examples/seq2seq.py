"""Word embeddings and an encoder-decoder (the TensorFlow tutorial's machine-translation model) on a toy
translation: English number words -> digits.

Task. Source: an integer 0 <= n < --max-number written in English words ("three thousand forty two",
"seven hundred", "zero"), a sequence of word tokens. Target: its decimal digits ("3 0 4 2"), one token
each. Every number appears once; a random --test fraction is held out, the rest is the training set.

Model (the tutorial's). Both sides embed their tokens (`Embedding`). The encoder (an LSTMCell) reads the
source reversed, so that it has read the first word last. The decoder (another LSTMCell) starts from the
encoder's final state, reads `<go>` and then the previous target token, and a Linear layer scores the
next token (softmax cross-entropy; the sequence ends with `<eos>`). Training feeds the true previous
token (teacher forcing); inference feeds the decoder's own previous output, the most likely token
(greedy), until `<eos>` or --max-output tokens. Adam, gradient norm clipped at 5.

Reported: exact-match accuracy of greedy decoding on the held-out numbers (target: at least 95 %), and the
encoder-decoder graph of the pair "three hundred forty two" -> "342" rendered with `tapegrad.viz.render`
(encoder_decoder.svg).
"""
import numpy as np
from common import example_parser, finish, out_dir, plot_lines, progress, write_csv

import tapegrad as tg
from tapegrad import nn
from tapegrad.optim import Adam, clip_grad_norm

ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
       "seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
SOURCE_VOCAB = ["<pad>"] + ONES + TENS[2:] + ["hundred", "thousand"]
TARGET_VOCAB = list("0123456789") + ["<go>", "<eos>"]
GO, EOS = TARGET_VOCAB.index("<go>"), TARGET_VOCAB.index("<eos>")


def words(n):
    """English words for 0 <= n < 1,000,000, e.g. 3042 -> ['three', 'thousand', 'forty', 'two']."""
    if n < 20:
        return [ONES[n]]
    if n < 100:
        return [TENS[n // 10]] + (words(n % 10) if n % 10 else [])
    if n < 1000:
        return [ONES[n // 100], "hundred"] + (words(n % 100) if n % 100 else [])
    return words(n // 1000) + ["thousand"] + (words(n % 1000) if n % 1000 else [])


def encode(numbers):
    """Padded id arrays: source (N, S) with lengths (N,), decoder inputs <go> d1 .. dk and targets d1 .. dk <eos>,
    both (N, K + 1) with 0/1 weights marking the real positions."""
    src = [[SOURCE_VOCAB.index(w) for w in words(n)] for n in numbers]
    digits = [[int(c) for c in str(n)] for n in numbers]
    S, K = max(map(len, src)), max(map(len, digits))
    source, lengths = np.zeros((len(numbers), S), np.int64), np.array([len(s) for s in src])
    dec_in, dec_out, weight = (np.zeros((len(numbers), K + 1), np.int64) for _ in range(3))
    for i, (s, d) in enumerate(zip(src, digits)):
        source[i, :len(s)] = s
        dec_in[i, :len(d) + 1] = [GO] + d
        dec_out[i, :len(d) + 1] = d + [EOS]
        weight[i, :len(d) + 1] = 1
    return source, lengths, dec_in, dec_out, weight


class EncoderDecoder(nn.Module):
    """Embeddings, an LSTM encoder over the reversed source, an LSTM decoder with a Linear output."""

    def __init__(self, embed, hidden, rng):
        super().__init__()
        self.source_embedding = nn.Embedding(len(SOURCE_VOCAB), embed, rng=rng)
        self.target_embedding = nn.Embedding(len(TARGET_VOCAB), embed, rng=rng)
        self.encoder = nn.LSTMCell(embed, hidden, rng=rng)
        self.decoder = nn.LSTMCell(embed, hidden, rng=rng)
        self.out = nn.Linear(hidden, len(TARGET_VOCAB), rng=rng)

    def encode(self, source, lengths):
        """The encoder's final (h, c) after reading each source reversed within its length."""
        xs = self.source_embedding(nn.reverse_sequences(source, lengths))
        return nn.unroll(self.encoder, xs, lengths=lengths)[1]

    def forward(self, source, lengths, dec_in):
        """Teacher forcing: logits (N, K + 1, target vocabulary) for the given decoder inputs."""
        hs, _ = nn.unroll(self.decoder, self.target_embedding(dec_in), self.encode(source, lengths))
        return self.out(hs)

    def greedy(self, source, lengths, max_output):
        """Decode from <go>, feeding back the most likely token; (N, max_output) token ids."""
        with tg.no_grad():
            state = self.encode(source, lengths)
            token, tokens = np.full(len(source), GO), []
            for _ in range(max_output):
                h, state = self.decoder(self.target_embedding(token), state)
                token = self.out(h).data.argmax(-1)
                tokens.append(token)
        return np.stack(tokens, axis=1)


def as_text(tokens):
    """Token ids up to the first <eos> as a digit string."""
    out = []
    for t in tokens:
        if t == EOS:
            break
        out.append(TARGET_VOCAB[t])
    return "".join(out)


def render_graph(model, number, path):
    """Render the encoder-decoder graph of one training pair with tapegrad.viz; returns the path or None."""
    source, lengths, dec_in, dec_out, weight = encode([number])
    loss = tg.cross_entropy(model(source, lengths, dec_in), dec_out)
    try:
        from tapegrad import viz
        return viz.render(loss, path, detail="cells")
    except (ImportError, RuntimeError) as e:
        print(f"graph not rendered: {e}")
        return None


def main(argv=None):
    parser = example_parser(__doc__, "out/seq2seq")
    parser.add_argument("--max-number", type=int, default=10000, help="numbers 0 .. N-1 (default 10000)")
    parser.add_argument("--test", type=float, default=0.2, help="held-out fraction (default 0.2)")
    parser.add_argument("--embed", type=int, default=32, help="embedding size (default 32)")
    parser.add_argument("--hidden", type=int, default=128, help="LSTM units of encoder and decoder (default 128)")
    parser.add_argument("--epochs", type=int, default=20, help="passes over the training pairs (default 20)")
    parser.add_argument("--batch", type=int, default=64, help="pairs per update (default 64)")
    parser.add_argument("--lr", type=float, default=0.005, help="Adam learning rate (default 0.005)")
    parser.add_argument("--max-output", type=int, default=8, help="longest greedy output (default 8)")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_number, args.epochs, args.hidden = 1000, 12, 64
    out = out_dir(args.out)
    rng = np.random.default_rng(args.seed)

    numbers = rng.permutation(args.max_number)
    n_test = int(len(numbers) * args.test)
    test, train = numbers[:n_test], numbers[n_test:]
    source, lengths, dec_in, dec_out, weight = encode(train)
    model = EncoderDecoder(args.embed, args.hidden, rng)
    print(f"{len(train)} training pairs, {len(test)} held out, e.g. {' '.join(words(int(train[0])))!r} -> "
          f"{train[0]}; {model.num_parameters():,} weights")

    opt = Adam(model.parameters(), lr=args.lr)
    losses = []
    for epoch in progress(range(1, args.epochs + 1), "epochs", every=1):
        order, total = rng.permutation(len(train)), []
        for i in range(0, len(train), args.batch):
            b = order[i:i + args.batch]
            S, K = lengths[b].max(), weight[b].sum(1).max()        # trim the padding of this batch
            opt.zero_grad()
            logits = model(source[b, :S], lengths[b], dec_in[b, :K])
            loss = tg.cross_entropy(logits, dec_out[b, :K], weight=weight[b, :K])
            loss.backward()
            clip_grad_norm(opt.params, 5.0)
            opt.step()
            total.append(loss.item())
        losses.append(float(np.mean(total)))
        print(f"epoch {epoch}/{args.epochs}  cross-entropy {losses[-1]:.4f}")

    test_source, test_lengths = encode(test)[:2]
    decoded = [as_text(t) for t in model.greedy(test_source, test_lengths, args.max_output)]
    correct = np.array([d == str(n) for d, n in zip(decoded, test)])
    accuracy = float(correct.mean())
    print(f"held-out exact match {accuracy:.4f} ({correct.sum()}/{len(test)})")
    for n, d in list(zip(test, decoded))[:8]:
        print(f"  {' '.join(words(int(n))):45s} -> {d:6s} {'ok' if d == str(n) else 'WRONG (' + str(n) + ')'}")

    write_csv(out / "heldout.csv", {"words": [" ".join(words(int(n))) for n in test], "target": test,
                                    "decoded": decoded, "correct": correct.astype(int)})
    write_csv(out / "loss.csv", {"epoch": np.arange(1, args.epochs + 1), "cross_entropy": losses})
    plot_lines(out / "loss.png", {"cross-entropy": losses}, title="seq2seq training", xlabel="epoch", logy=True)
    graph = render_graph(model, 342, out / "encoder_decoder.svg")
    results = {"heldout_exact_match": accuracy, "heldout": len(test), "train": len(train), "epochs": args.epochs,
               "weights": model.num_parameters(), "final_loss": losses[-1],
               "graph": None if graph is None else "encoder_decoder.svg"}
    target = 0.95 if not args.quick else 0.5
    return finish(args, results, [(accuracy >= target, f"held-out exact match {accuracy:.3f} is below {target}")])


if __name__ == "__main__":
    main()
