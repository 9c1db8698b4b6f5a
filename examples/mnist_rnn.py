"""Classify handwritten digits with 150 basic RNN neurons reading one image row per step
(TensorFlow tutorial seed 004, #7).

Task (the tutorial's): an image of R rows x C columns is a sequence of R steps of C pixels (in
[0, 1]); a fully connected layer of 10 neurons on the final state (after the last row) gives the
class logits, trained with softmax cross-entropy (mean over the batch). Model: RNNCell(C, 150),
tanh (BasicRNNCell), then Linear(150, 10). Adam, lr 0.001, batch 150, 100 epochs, training set
shuffled every epoch (the tutorial's code listing, which the seed's text omits, follows Geron,
Hands-On Machine Learning, ch. 14).

Data (examples/digits_data.py): MNIST from its IDX files with --data FOLDER (28 x 28, 50,000 /
10,000 / 10,000), otherwise scikit-learn's bundled 8 x 8 digits (1,199 train / 239 validation /
359 test). The tutorial reports 98 % test accuracy on MNIST; here the default is the 8 x 8
digits (no MNIST download is possible in this project), reported beside it.

Result: training and validation accuracy after every epoch, test accuracy at the end, beside the
majority-class baseline.
"""
import numpy as np
from common import example_parser, finish, out_dir, plot_lines, write_csv
from digits_data import load_digits
from tutorial_shared import parse, training_steps

import tapegrad as tg
from tapegrad.nn import Linear, Module, RNNCell, unroll
from tapegrad.optim import Adam


class RowClassifier(Module):
    """RNNCell over the rows, Linear(H, 10) on the final state: images (B, R, C) -> logits (B, 10)."""

    def __init__(self, n_inputs, n_neurons, rng):
        super().__init__()
        self.cell = RNNCell(n_inputs, n_neurons, rng=rng)
        self.logits = Linear(n_neurons, 10, rng=rng)

    def forward(self, images):
        _, state = unroll(self.cell, images)
        return self.logits(state)


def accuracy(model, images, labels):
    with tg.no_grad():
        return float((model(images).data.argmax(-1) == labels).mean())


def main(argv=None):
    parser = example_parser(__doc__, "out/mnist_rnn")
    parser.add_argument("--data", default=None,
                        help="folder with MNIST's IDX files (default: scikit-learn's 8x8 digits)")
    parser.add_argument("--epochs", type=int, default=100, help="passes over the training set (tutorial: 100)")
    parser.add_argument("--batch", type=int, default=150, help="images per Adam step (tutorial: 150)")
    parser.add_argument("--neurons", type=int, default=150, help="recurrent neurons (tutorial: 150)")
    parser.add_argument("--lr", type=float, default=0.001, help="Adam learning rate (tutorial: 0.001)")
    args = parse(parser, argv, quick=dict(epochs=15))
    out = out_dir(args.out)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_digits(args.data, seed=args.seed)
    print(f"{len(y_train)} training / {len(y_val)} validation / {len(y_test)} test images of "
          f"{x_train.shape[1]} rows x {x_train.shape[2]} pixels")
    rng = np.random.default_rng(args.seed)
    model = RowClassifier(x_train.shape[2], args.neurons, rng)
    opt = Adam(model.parameters(), lr=args.lr)

    losses, history = [], []
    for epoch in training_steps(args.epochs, "epoch", losses):
        order = rng.permutation(len(y_train))
        epoch_losses = []
        for i in range(0, len(order), args.batch):
            idx = order[i:i + args.batch]
            opt.zero_grad()
            loss = tg.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            epoch_losses.append(loss.item())
        losses.append(float(np.mean(epoch_losses)))
        history.append((epoch + 1, losses[-1], accuracy(model, x_train, y_train), accuracy(model, x_val, y_val)))

    test_acc = accuracy(model, x_test, y_test)
    baseline = float(np.mean(y_test == np.bincount(y_train).argmax()))
    epochs, train_loss, train_acc, val_acc = (np.array(c) for c in zip(*history))
    print(f"after {args.epochs} epochs: train accuracy {train_acc[-1]:.4f}, validation {val_acc[-1]:.4f}, "
          f"test {test_acc:.4f} (majority-class baseline {baseline:.4f}; the tutorial: 0.98 on 28x28 MNIST)")
    write_csv(out / "epochs.csv", {"epoch": epochs, "train_loss": train_loss, "train_accuracy": train_acc,
                                   "val_accuracy": val_acc})
    plot_lines(out / "accuracy.png", {"train": train_acc, "validation": val_acc}, title="row-by-row RNN classifier",
               xlabel="epoch", ylabel="accuracy")
    results = {"test_accuracy": test_acc, "val_accuracy": float(val_acc[-1]), "train_accuracy": float(train_acc[-1]),
               "baseline_accuracy": baseline, "epochs": args.epochs,
               "data": "MNIST" if args.data else "scikit-learn 8x8 digits", "n_train": len(y_train)}
    return finish(args, results, [
        (test_acc >= 0.9, f"test accuracy {test_acc:.3f} < 0.9 (majority-class baseline {baseline:.3f})"),
    ])


if __name__ == "__main__":
    main()
