"""Write your own recurrent cell, train it with `unroll` + Adam, and gradcheck it through time.

The cell is a minimal gated unit (MGU, Zhou et al. 2016): a GRU with one gate doing the work of both.
The task is the ANNT seed's sequence memory: ten digit sequences, e.g. 1 0 1 2 3 4 5 6 7 8 1 and
6 0 1 2 4 4 4 6 7 8 6, that share their middle, so the network must remember the first digit for ten
steps to end it correctly (and which of two middles follows "2"). Trained with teacher forcing, then
asked to produce each sequence from its first digit alone, feeding back its own outputs.

    python examples/custom_cell.py
"""
import numpy as np

import tapegrad as tg
import tapegrad.nn as nn


class MinimalGatedUnit(nn.Module):
    """f = sigmoid(x U_f + h W_f + b_f);  h~ = tanh(x U_h + (f * h) W_h + b_h);  h = (1 - f) * h + f * h~."""

    def __init__(self, input_size, hidden_size, dtype=None, rng=0):
        super().__init__()
        init, rng, D, H = nn.init, nn.init.make_rng(rng), input_size, hidden_size
        self.U_f = nn.Parameter(init.glorot_uniform((D, H), rng, dtype=dtype))
        self.W_f = nn.Parameter(init.orthogonal((H, H), rng, dtype=dtype))
        self.b_f = nn.Parameter(init.zeros(H, dtype))
        self.U_h = nn.Parameter(init.glorot_uniform((D, H), rng, dtype=dtype))
        self.W_h = nn.Parameter(init.orthogonal((H, H), rng, dtype=dtype))
        self.b_h = nn.Parameter(init.zeros(H, dtype))

    def forward(self, x, h=None):
        if h is None:
            h = tg.tensor(np.zeros((x.shape[0], self.W_h.shape[0]), self.W_h.dtype))
        f = tg.sigmoid(x @ self.U_f + h @ self.W_f + self.b_f)
        h_tilde = tg.tanh(x @ self.U_h + (f * h) @ self.W_h + self.b_h)
        h = (1 - f) * h + f * h_tilde
        return h, h


class Memorizer(nn.Module):
    """One-hot digit -> MGU -> linear layer -> logits of the next digit, at every step."""

    def __init__(self, hidden_size=20, dtype=None):
        super().__init__()
        self.cell = MinimalGatedUnit(10, hidden_size, dtype)
        self.out = nn.Linear(hidden_size, 10, dtype=dtype, rng=1)

    def forward(self, xs, state=None):
        hs, state = nn.unroll(self.cell, xs, state)      # xs (batch, T, 10) -> hs (batch, T, hidden)
        return self.out(hs), state


SEQUENCES = np.array([[int(c) for c in s] for s in [
    "10123456781", "20123456782", "30123456783", "40123456784", "50123456785",
    "60124446786", "70124446787", "80124446788", "90124446789", "00124446780"]])


def data(dtype=np.float32):
    """Teacher forcing: inputs are digits 0..9 of each sequence (one-hot), targets digits 1..10."""
    return tg.one_hot(SEQUENCES[:, :-1], 10, dtype), SEQUENCES[:, 1:]


def produce(model, first):
    """The model's own sequence from its first digit: each output digit is fed back as the next input."""
    digits, h = [first], None
    with tg.no_grad():
        for _ in range(SEQUENCES.shape[1] - 1):
            out, h = model.cell(tg.one_hot(np.array([digits[-1]]), 10), h)
            digits.append(int(model.out(out).data.argmax()))
    return "".join(map(str, digits))


def train(epochs=150, lr=0.01):
    model = Memorizer()
    print(model)
    inputs, targets = data()
    opt = tg.optim.Adam(model.parameters(), lr=lr)
    for epoch in range(1, epochs + 1):
        logits, _ = model(inputs)
        loss = tg.cross_entropy(logits, targets)
        opt.zero_grad()
        loss.backward()                                  # BPTT through the 10 unrolled steps
        opt.step()
        if epoch == 1 or epoch % 25 == 0:
            print(f"epoch {epoch:3d}  cross-entropy {loss.item():.4f}")
    return model


def main():
    model = train()
    good = 0
    for seq in SEQUENCES:
        target = "".join(map(str, seq))
        produced = produce(model, seq[0])
        good += produced == target
        print(f"target {target}  produced {produced}  {'good' if produced == target else 'BAD'}")
    print(f"{good}/{len(SEQUENCES)} sequences reproduced from their first digit")

    # Gradient check of the whole unrolled sequence, in float64, against central finite differences.
    model64 = Memorizer(dtype=np.float64)
    inputs, targets = data(np.float64)
    report = tg.gradcheck(lambda *params: tg.cross_entropy(model64(inputs)[0], targets), model64.parameters())
    print(report)


if __name__ == "__main__":
    main()
