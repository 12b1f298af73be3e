"""A PyTorch mirror of the project's CNN and its Trainer (modules/model.py, modules/trainer.py:
fit) for sweeping model candidates on a GPU, where one 24-epoch training takes a minute or two
instead of ~15 on 2 CPU cores. Exploratory: it ranks candidates for benchmarks/model_search.py,
which trains the chosen ones with the project's own code. It needs PyTorch and CUDA, which the
project's lock does not install (the device machine's image has both).

    python3 benchmarks/torch_mirror.py --data-dir DIR --out OUT [--round 1|2] [--worker K --workers N]

Mirrored: conv(no bias)-BN(momentum 0.9, eps 1e-3)-ReLU blocks with max-pool and dropout, a dense
ReLU layer with dropout, a softmax head; Glorot-uniform initialisation; L2 weight decay on the
convolution and dense kernels; Adam (eps 1e-7) with cosine decay to 1 % over the whole run;
batch 128; per-image shifts padded with the darkest pixel and flips; a stratified 5,000-image
hold-out and z-scores over the remaining training pixels; early stopping on the hold-out's loss
after the first half, restoring the best epoch; bf16 autocast with float32 loss. Not mirrored:
the random streams. Worker K of N takes every N-th job of the round's list and appends one JSON
line per training to OUT/results.jsonl; with DEADLINE (epoch seconds) set, a worker starts no
job it expects to end after it.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as functional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fmnist import dataset
from modules import model as model_lib  # HParams only: no TensorFlow at import

# The project's tuned values (modules/tuned_hyperparameters.json over HParams' defaults), as a dict
# of HParams field names; the candidates below override some of them.
TUNED = model_lib.HParams.tuned().to_dict()

CONFIGS = [  # priority order
    ("tuned", {}),
    ("3blocks", {"num_blocks": 3}),
    ("3blocks-1conv-32ep", {"num_blocks": 3, "convs_per_block": 1, "epochs": 32}),
    ("base48", {"base_filters": 48}),
    ("3blocks-16ep", {"num_blocks": 3, "epochs": 16}),
    ("3blocks-base48-32ep", {"num_blocks": 3, "base_filters": 48, "epochs": 32}),
    ("tuned-32ep", {"epochs": 32}),
    ("3blocks-32ep", {"num_blocks": 3, "epochs": 32}),
    ("3blocks-1conv-24ep", {"num_blocks": 3, "convs_per_block": 1}),
    ("3blocks-1conv-b48-32ep", {"num_blocks": 3, "convs_per_block": 1, "base_filters": 48, "epochs": 32}),
    ("3blocks-shift2", {"num_blocks": 3, "max_shift": 2}),
    ("3blocks-flip", {"num_blocks": 3, "flip": True}),
    ("3blocks-d256", {"num_blocks": 3, "dense_units": 256}),
    ("3blocks-base48-40ep", {"num_blocks": 3, "base_filters": 48, "epochs": 40}),
    ("base40", {"base_filters": 40}),
    ("tuned-16ep", {"epochs": 16}),
    ("3blocks-20ep", {"num_blocks": 3, "epochs": 20}),
    ("3blocks-base64-40ep", {"num_blocks": 3, "base_filters": 64, "epochs": 40}),
]
SEEDS = [1, 2]
NO_ES = {"early_stopping_patience": 999}  # no early stopping: the cosine schedule runs to its end
CONFIGS2 = [
    ("tuned", {}),
    ("3blocks-20ep", {"num_blocks": 3, "epochs": 20}),
    ("3blocks", {"num_blocks": 3}),
    ("tuned-noES", NO_ES),
    ("3blocks-20ep-noES", {"num_blocks": 3, "epochs": 20, **NO_ES}),
    ("3blocks-16ep", {"num_blocks": 3, "epochs": 16}),
    ("3blocks-base48-32ep-noES", {"num_blocks": 3, "base_filters": 48, "epochs": 32, **NO_ES}),
]
SEEDS2 = [3, 4, 5, 6]


def load(device, data_dir):
    """The official splits as the pipeline sees them: fmnist.dataset's reader and its stratified
    5,000-image hold-out (seed 42, as ExampleGen draws it), z-scores over the remaining pixels."""
    train, test = dataset.read_split(data_dir, dataset.TRAIN), dataset.read_split(data_dir, dataset.TEST)
    xtr, ytr = train.images.reshape(-1, 28, 28) / 255.0, train.labels.astype(np.int64)
    xte, yte = test.images.reshape(-1, 28, 28) / 255.0, test.labels.astype(np.int64)
    hold = dataset.stratified_holdout(ytr, 5000, 42)
    mask = np.ones(len(ytr), bool)
    mask[hold] = False
    mean, std = xtr[mask].mean(), xtr[mask].std()  # tft.scale_to_z_score over the train split's pixels

    def t(x, y):
        return (torch.tensor(((x - mean) / std).astype(np.float32)).unsqueeze(1).to(device),
                torch.tensor(y).to(device))

    return t(xtr[mask], ytr[mask]), t(xtr[hold], ytr[hold]), t(xte, yte)


class Net(nn.Module):
    def __init__(self, h):
        super().__init__()
        layers, cin, size = [], 1, 28
        for b in range(h["num_blocks"]):
            cout = h["base_filters"] * 2 ** b
            for _ in range(h["convs_per_block"]):
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                           nn.BatchNorm2d(cout, eps=1e-3, momentum=1 - h["bn_momentum"]), nn.ReLU()]
                cin = cout
            layers += [nn.MaxPool2d(2), nn.Dropout(h["conv_dropout"])]
            size //= 2
        self.features = nn.Sequential(*layers)
        self.dense = nn.Linear(cin * size * size, h["dense_units"])
        self.drop = nn.Dropout(h["dense_dropout"])
        self.out = nn.Linear(h["dense_units"], 10)
        for m in self.modules():  # Keras defaults: glorot_uniform kernels, zero biases
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.regularised = [m.weight for m in self.modules() if isinstance(m, nn.Conv2d)] + [self.dense.weight]

    def forward(self, x):
        x = self.features(x).flatten(1)
        return self.out(self.drop(functional.relu(self.dense(x))))


def macs(h):
    total, cin, size = 0, 1, 28
    for b in range(h["num_blocks"]):
        cout = h["base_filters"] * 2 ** b
        for _ in range(h["convs_per_block"]):
            total += size * size * 9 * cin * cout
            cin = cout
        size //= 2
    return total + cin * size * size * h["dense_units"] + h["dense_units"] * 10


def augment(x, h, gen):
    n = x.shape[0]
    if h["flip"]:
        flip = torch.rand(n, device=x.device, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    p = h["max_shift"]
    if p:
        bg = x.min()
        padded = functional.pad(x - bg, (p, p, p, p)) + bg
        win = torch.arange(28, device=x.device)
        r = torch.randint(0, 2 * p + 1, (n, 1), device=x.device, generator=gen) + win  # [n, 28]
        c = torch.randint(0, 2 * p + 1, (n, 1), device=x.device, generator=gen) + win
        rows = torch.gather(padded, 2, r[:, None, :, None].expand(n, 1, 28, 28 + 2 * p))
        x = torch.gather(rows, 3, c[:, None, None, :].expand(n, 1, 28, 28))
    return x


def evaluate(model, x, y):
    model.eval()
    losses, correct = 0.0, 0
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for i in range(0, len(y), 2048):
            logits = model(x[i:i + 2048]).float()
            losses += functional.cross_entropy(logits, y[i:i + 2048], reduction="sum").item()
            correct += (logits.argmax(1) == y[i:i + 2048]).sum().item()
    return losses / len(y), correct / len(y)


def train(h, data, seed, device):
    torch.manual_seed(seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    (xtr, ytr), (xev, yev), (xte, yte) = data
    model = Net(h).to(device).to(memory_format=torch.channels_last)
    steps = math.ceil(len(ytr) / h["batch_size"])
    total = steps * h["epochs"]
    opt = torch.optim.Adam(model.parameters(), lr=h["learning_rate"], eps=1e-7, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (1 - 0.01) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)) + 0.01)
    best, best_state, waited, epochs_run = float("inf"), None, 0, 0
    for epoch in range(h["epochs"]):
        model.train()
        order = torch.randperm(len(ytr), device=device, generator=gen)
        for s in range(steps):
            idx = order[s * h["batch_size"]:(s + 1) * h["batch_size"]]
            x = augment(xtr[idx], h, gen) if h["augment"] else xtr[idx]
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(x)
            loss = functional.cross_entropy(logits.float(), ytr[idx])
            loss = loss + h["weight_decay"] * sum((w.float() ** 2).sum() for w in model.regularised)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        epochs_run = epoch + 1
        val_loss, _ = evaluate(model, xev, yev)
        if val_loss < best:
            best, waited = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch >= h["epochs"] // 2:  # Keras start_from_epoch: no stopping in the first half
            waited += 1
            if waited >= h["early_stopping_patience"]:
                break
    model.load_state_dict(best_state)
    _, eval_acc = evaluate(model, xev, yev)
    _, test_acc = evaluate(model, xte, yte)
    return eval_acc, test_acc, epochs_run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--data-dir", required=True, help="the official IDX .gz files")
    ap.add_argument("--out", default=".")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--round", type=int, default=1)
    args = ap.parse_args()
    deadline = float(os.environ.get("DEADLINE", "inf"))
    device = "cuda"
    torch.backends.cudnn.benchmark = True
    data = load(device, args.data_dir)
    # The first six candidates with both seeds first, then the rest with one seed, then their second seed.
    jobs = ([(n, o, s) for n, o in CONFIGS[:6] for s in SEEDS] + [(n, o, SEEDS[0]) for n, o in CONFIGS[6:]]
            + [(n, o, SEEDS[1]) for n, o in CONFIGS[6:]])
    if args.round == 2:
        jobs = [(n, o, s) for pair in (SEEDS2[:2], SEEDS2[2:]) for n, o in CONFIGS2 for s in pair]
    if args.smoke:
        jobs = [("smoke", {"epochs": 1, "num_blocks": 3, "flip": True, "max_shift": 2}, 0)]
    rate = None  # seconds per (epoch x relative cost), learnt from this worker's jobs
    base = macs(TUNED)
    for name, over, seed in jobs[args.worker::args.workers]:
        h = {**TUNED, **over}
        work = h["epochs"] * macs(h) / base
        if rate is not None and time.time() + rate * work > deadline:
            print(f"skip {name} seed {seed}: would pass the deadline", flush=True)
            continue
        started = time.time()
        eval_acc, test_acc, epochs_run = train(h, data, seed, device)
        seconds = time.time() - started
        rate = seconds / work
        record = dict(name=name, seed=seed, eval_acc=eval_acc, test_acc=test_acc, epochs_run=epochs_run,
                      epochs=h["epochs"], rel_cost=macs(h) / base, seconds=seconds, hparams=h)
        with open(os.path.join(args.out, "results.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{name} seed {seed}: test {test_acc:.4f} eval {eval_acc:.4f} epochs {epochs_run} "
              f"cost {macs(h) / base:.2f}x {seconds:.0f}s", flush=True)


if __name__ == "__main__":
    main()
