"""An independent minimal implementation of the Fashion-MNIST recipe in plain PyTorch + numpy (no keras_okd, no Keras),
to check keras-okd's numbers against: independent training, DML and TSB with two small CNNs.

Everything is written here from the papers and the recipe, not from keras-okd's code:

- Data: Fashion-MNIST's IDX files (Debian's /usr/share/datasets/fashion-mnist/, or --data-dir), pixels / 255 in [0, 1].
  Training subset of --train-size images: the stratified rule documented in keras_okd/data/mnist_family.py
  (per-class quotas by largest remainder, numpy.random.default_rng(subset_seed).permutation within each class in
  class order, indices sorted), written again below.
- Augmentation: zero-pad 2, random 28x28 crop (whole-pixel shifts), random horizontal flip, per image.
- Network: keras_okd's `simple_cnn` layer for layer: conv3x3(width, no bias) - BN - ReLU - maxpool2 - conv3x3(2 width,
  no bias) - BN - ReLU - maxpool2 - flatten - linear(10). BN momentum 0.1 (Keras 0.9), epsilon 1e-5 (the zoo's).
  --init torch (default) keeps PyTorch's default initialisers; --init keras uses Keras's (Glorot-uniform kernels, zero
  biases).
- Students: --students copies of width --width, or one student per entry of --widths (a heterogeneous group, e.g.
  --widths 8 64: simple_cnn_8 beside simple_cnn_64).
- Optimiser: SGD momentum 0.9, (coupled) weight decay 5e-4 on every parameter, batch 128 (last batch partial):
  --sgd torch (default) is `torch.optim.SGD` (the velocity sums raw gradients, each step scales it by the current
  rate); --sgd keras is `KerasSGD`, Keras's rule (the velocity sums steps already scaled by their own rate). Cosine
  decay of the learning rate to 0, per step (--lr-step step) or per epoch (--lr-step epoch), or with --milestones the
  step schedule of configs/fashion_mnist (x0.1 from each milestone epoch); --lr-warmup-epochs W multiplies step s's
  rate by min(1, (s + 1) / (W x steps per epoch)), a linear warm-up (PyTorch's LinearLR per batch), the rule of the
  configs' `schedule.warmup_epochs`.
- Losses (per student i, summed over students; KD = tau^2 KL(target || softmax(z_i / tau)), batch mean, targets
  detached):
  independent: CE_i.
  dml: CE_i + mean_{j != i} KD(p_j || p_i) at tau 1 (--dml-temperature; students updated simultaneously from one
  forward pass).
  tsb: CE_i + lambda_ta w(e) sum_{j != i} KD(TA_j || p_i) + lambda_si w(e) KD(mean_j p_j || p_i), tau 4, beta 0.8,
  lambdas 0.5; TA_j[k] <- beta TA_j[k] + (1 - beta) softmax(z_j(x_k) / tau) on every visit of sample k (folded in,
  then read), read with the bias correction 1 / (1 - beta^n_k), n_k the visits so far; w(e) = 0 for the first
  --warmup epochs, then 1 (the bank is updated during the warm-up too).
- Output: per epoch the training CE, accuracy and logit spread of each student and its test accuracy (every
  --eval-every epochs and after the last); at the end the test accuracy of each student and of the ensemble (mean of
  probabilities) and each student's training accuracy in the last epoch, per seed, and one JSON line.

Where this differs from keras-okd's training of the same students (keras_okd/models/_simple_cnn.py, the runner's
optimizer and coupled weight decay, its data pipeline), each difference with the option that switches it to
keras-okd's behaviour (the defaults keep this script's own, so existing logs stay valid):

- Initialisers (--init keras): Keras's Conv2D and Dense default to Glorot-uniform kernels, limit
  sqrt(6 / (fan_in + fan_out)), and zero biases (the zoo's simple_cnn keeps those defaults); PyTorch's Conv2d and
  Linear draw kernels and biases from U(+-1 / sqrt(fan_in)). For simple_cnn_8 the limits are 0.27 / 0.17 / 0.087
  (conv1 / conv2 / linear) against 0.33 / 0.12 / 0.036, and the linear bias is 0 against U(+-0.036).
- Momentum (--sgd keras): keras.optimizers.SGD keeps v <- 0.9 v - lr_t g_t, w <- w + v; torch.optim.SGD keeps
  b <- 0.9 b + g_t, w <- w - lr_t b. The same while the rate is constant; while it changes (the warm-up ramp, every
  step of the cosine) Keras weights each past gradient by the rate of its own step, PyTorch by the current one.
- Not differences: batch normalisation (the zoo sets Keras's momentum 0.9 = PyTorch's 0.1 and epsilon 1e-5 =
  PyTorch's; only the moving variance is updated with the biased batch variance in Keras and the unbiased one in
  PyTorch, a factor n / (n - 1), n the values per channel in a batch, at least 40 x 14 x 14 in the 1,000-image
  recipe), the weight decay (keras-okd adds 0.5 wd ||w||^2 over every trainable weight to the loss, so wd w joins the
  gradient before momentum, as here), the padding (Keras's "same" for 3x3 stride 1 is PyTorch's padding=1;
  max-pooling 2 "valid" in both), the flatten order (NHWC against NCHW: a fixed permutation of the linear layer's
  inputs, the same distribution at initialisation), the schedule (Keras's CosineDecay over all steps times the same
  warm-up ramp), the data (the same stratified images, pixels / 255, a new permutation of all samples every epoch,
  the last batch short; the draws differ, as seeds do), the losses (cross-entropy batch means summed over the
  students) and the test (inference-mode batch norm, all 10,000 images).

    python benchmarks/minimal_okd_torch.py --method dml --lr 0.01 --epochs 15 --train-size 20000 --seeds 0
"""

import argparse
import gzip
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DEBIAN = "/usr/share/datasets/fashion-mnist"


# ------------------------------------------------------------------------------------------------------------- data
def read_idx(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    assert data[:3] == b"\x00\x00\x08", f"{path}: not an unsigned-byte IDX file"
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(data_dir):
    def pair(prefix):
        def find(name):
            for ext in (".gz", ""):
                if os.path.isfile(os.path.join(data_dir, name + ext)):
                    return os.path.join(data_dir, name + ext)
            raise FileNotFoundError(f"{name}(.gz) not in {data_dir}")
        return read_idx(find(f"{prefix}-images-idx3-ubyte")), read_idx(find(f"{prefix}-labels-idx1-ubyte"))
    return pair("train"), pair("t10k")


def stratified_subset(labels, size, seed):
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels)
    share = size * counts / len(labels)
    quota = np.floor(share).astype(int)
    quota[np.argsort(-(share - quota), kind="stable")[:size - quota.sum()]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:quota[c]] for c in range(len(counts))]
    return np.sort(np.concatenate(chosen))


def augment(images, generator, padding=2, flip=True):
    """Pad with zeros, crop a random window (whole pixels), flip left-right with probability 1/2: (B, 1, H, W)."""
    b, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    rows = dy[:, None] + torch.arange(h)[None, :]
    cols = dx[:, None] + torch.arange(w)[None, :]
    if flip:
        flips = torch.randint(0, 2, (b,), generator=generator).bool()
        cols = torch.where(flips[:, None], cols.flip(1), cols)
    return padded[torch.arange(b)[:, None, None], 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


# ------------------------------------------------------------------------------------------------------------- model
class SimpleCNN(nn.Module):
    def __init__(self, width=16, num_classes=10, size=28):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width, eps=1e-5, momentum=0.1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width, eps=1e-5, momentum=0.1),
            nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.classifier = nn.Linear(2 * width * (size // 4) ** 2, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def keras_init(model):
    """Keras's defaults: Glorot-uniform kernels (conv and dense), zero biases (BN: gamma 1, beta 0 either way)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class KerasSGD(torch.optim.Optimizer):
    """SGD with momentum as `keras.optimizers.SGD` applies it (nesterov off), the weight decay coupled as keras-okd
    adds it to the loss: v <- momentum v - lr (g + weight_decay w), w <- w + v. `torch.optim.SGD` keeps
    b <- momentum b + g + weight_decay w, w <- w - lr b instead: the same while lr is constant, not while it changes.

    Args:
        params: the parameters (or parameter groups).
        lr: the learning rate (each group's `lr` may be changed between steps, as for torch.optim.SGD).
        momentum: the velocity's decay.
        weight_decay: the coupled weight decay.

    Example:

        optimizer = KerasSGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                velocity = self.state[p].setdefault("velocity", torch.zeros_like(p))
                velocity.mul_(group["momentum"]).sub_(group["lr"] * (p.grad + group["weight_decay"] * p))
                p.add_(velocity)


def make_optimizer(kind, params, lr, weight_decay, momentum=0.9):
    """`torch.optim.SGD` (kind "torch") or `KerasSGD` (kind "keras") over `params`."""
    if kind == "keras":
        return KerasSGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


# ------------------------------------------------------------------------------------------------------------- losses
def kd(target, logits, tau):
    """tau^2 KL(target || softmax(logits / tau)), batch mean; target detached."""
    target = target.detach()
    log_p = F.log_softmax(logits / tau, dim=-1)
    return tau ** 2 * (target * (torch.log(target.clamp_min(1e-30)) - log_p)).sum(-1).mean()


class TemporalBank:
    def __init__(self, num_samples, peers, classes, beta):
        self.bank = torch.zeros(num_samples, peers, classes)
        self.counts = torch.zeros(num_samples, dtype=torch.int64)
        self.beta = beta

    def fold_in(self, index, probs):
        """Fold this visit's predictions (B, M, C) in, write back, return the bias-corrected accumulators."""
        counts = self.counts[index] + 1
        new = self.beta * self.bank[index] + (1 - self.beta) * probs.detach()
        self.bank[index], self.counts[index] = new, counts
        return new / (1 - self.beta ** counts.float())[:, None, None]


def total_loss(method, logits, labels, index, epoch, args, bank):
    """Sum over students of each student's loss; logits is a list of (B, C)."""
    m = len(logits)
    loss = sum(F.cross_entropy(z, labels) for z in logits)
    if method == "dml":
        tau = args.dml_temperature
        probs = [F.softmax(z / tau, -1).detach() for z in logits]
        loss = loss + sum(sum(kd(probs[j], logits[i], tau) for j in range(m) if j != i) / (m - 1) for i in range(m))
    elif method == "tsb":
        tau = args.temperature
        probs = torch.stack([F.softmax(z.detach() / tau, -1) for z in logits], 1)  # (B, M, C)
        targets = bank.fold_in(index, probs)
        if epoch >= args.warmup:
            spatial = probs.mean(1)
            for i in range(m):
                loss = loss + args.lambda_ta * sum(kd(targets[:, j], logits[i], tau) for j in range(m) if j != i)
                loss = loss + args.lambda_si * kd(spatial, logits[i], tau)
    return loss


# ------------------------------------------------------------------------------------------------------------- run
def evaluate(models, x, y, batch=1000):
    for model in models:
        model.eval()
    correct, ensemble = np.zeros(len(models)), 0
    with torch.no_grad():
        for start in range(0, len(x), batch):
            xb, yb = x[start:start + batch], y[start:start + batch]
            probs = [F.softmax(model(xb), -1) for model in models]
            correct += [(p.argmax(-1) == yb).sum().item() for p in probs]
            ensemble += (torch.stack(probs).mean(0).argmax(-1) == yb).sum().item()
    return correct / len(x), ensemble / len(x)


def run(seed, args, data):
    (x, y), (xt, yt) = data
    torch.manual_seed(seed)
    np.random.seed(seed)
    generator = torch.Generator().manual_seed(seed)
    models = [SimpleCNN(width) for width in args.widths]
    if args.init == "keras":
        for model in models:
            keras_init(model)
    params = [p for model in models for p in model.parameters()]
    optimizer = make_optimizer(args.sgd, params, args.lr, args.weight_decay)
    n = len(x)
    steps_per_epoch = math.ceil(n / args.batch_size)
    total = steps_per_epoch * args.epochs
    bank = TemporalBank(n, args.students, 10, args.beta) if args.method == "tsb" else None
    warmup_steps = round(args.lr_warmup_epochs * steps_per_epoch)
    step = 0
    start = time.time()
    for epoch in range(args.epochs):
        for model in models:
            model.train()
        sums = np.zeros((3, args.students))
        order = torch.randperm(n, generator=generator)
        for b in range(steps_per_epoch):
            index = order[b * args.batch_size:(b + 1) * args.batch_size]
            when = step if args.lr_step == "step" else epoch * steps_per_epoch
            for group in optimizer.param_groups:
                if args.milestones is not None:  # configs/fashion_mnist's step schedule: x0.1 from each milestone epoch
                    group["lr"] = args.lr * 0.1 ** sum(epoch >= m for m in args.milestones)
                else:
                    group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * min(when, total) / total))
                if warmup_steps >= 1:
                    group["lr"] *= min(1.0, (step + 1) / warmup_steps)
            xb = augment(x[index], generator, flip=not args.no_flip) if args.augment else x[index]
            yb = y[index]
            logits = [model(xb) for model in models]
            loss = total_loss(args.method, logits, yb, index, epoch, args, bank)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            with torch.no_grad():
                for i, z in enumerate(logits):
                    sums[:, i] += [F.cross_entropy(z, yb).item(), (z.argmax(-1) == yb).float().mean().item(),
                                   z.std(-1, unbiased=False).mean().item()]
        sums /= steps_per_epoch
        if (epoch + 1) % args.eval_every and epoch + 1 < args.epochs:
            continue
        accuracy, ensemble = evaluate(models, xt, yt)
        if args.verbose:
            cells = [f"s{i}: ce {sums[0, i]:.4f} acc {sums[1, i]:.4f} logit_std {sums[2, i]:.4f} test {accuracy[i]:.4f}"
                     for i in range(args.students)]
            print(f"seed {seed} epoch {epoch + 1}: " + " | ".join(cells) + f" | ens {ensemble:.4f}", flush=True)
    return {"seed": seed, "students": [round(100 * float(a), 2) for a in accuracy],
            "ensemble": round(100 * ensemble, 2), "train": [round(100 * float(a), 2) for a in sums[1]],
            "seconds": round(time.time() - start, 1)}


def build_parser():
    """The command line (every default is this script's own behaviour, so earlier logs stay valid)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="independent", choices=["independent", "dml", "tsb"])
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--train-size", type=int, default=20_000)
    parser.add_argument("--subset-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--students", type=int, default=2)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--widths", type=int, nargs="+", default=None,
                        help="one width per student (a heterogeneous group); default: --students x --width")
    parser.add_argument("--lr-warmup-epochs", type=float, default=0.0,
                        help="linear learning-rate warm-up over this many epochs, per step (default 0: none)")
    parser.add_argument("--eval-every", type=int, default=1, help="test every this many epochs (and after the last)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--init", default="torch", choices=["torch", "keras"],
                        help="initialisers: PyTorch's defaults, or Keras's (Glorot-uniform kernels, zero biases)")
    parser.add_argument("--sgd", default="torch", choices=["torch", "keras"],
                        help="momentum rule: torch.optim.SGD's, or Keras's (KerasSGD: each step's rate inside the "
                             "velocity)")
    parser.add_argument("--lr-step", default="step", choices=["step", "epoch"])
    parser.add_argument("--milestones", type=int, nargs="+", default=None,
                        help="step schedule instead of cosine: x0.1 from each of these epochs (0-based), e.g. 10 13 as "
                             "configs/fashion_mnist")
    parser.add_argument("--no-augment", dest="augment", action="store_false")
    parser.add_argument("--no-flip", action="store_true")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=4.0, help="TSB's tau (default: 4)")
    parser.add_argument("--dml-temperature", type=float, default=1.0,
                        help="DML's tau (default: 1, the paper's; the KL is then scaled by tau^2)")
    parser.add_argument("--beta", type=float, default=0.8)
    parser.add_argument("--lambda-ta", type=float, default=0.5)
    parser.add_argument("--lambda-si", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=DEBIAN)
    parser.add_argument("--quiet", dest="verbose", action="store_false")
    return parser


def main():
    args = build_parser().parse_args()
    args.widths = args.widths or [args.width] * args.students
    args.students = len(args.widths)
    torch.set_num_threads(args.threads)
    (x, y), (xt, yt) = load(args.data_dir)
    if args.train_size < len(y):
        keep = stratified_subset(y, args.train_size, args.subset_seed)
        x, y = x[keep], y[keep]

    def tensors(images, labels):
        return (torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1),
                torch.from_numpy(labels.astype(np.int64)))

    data = (tensors(x, y), tensors(xt, yt))
    results = []
    for seed in args.seeds:
        result = run(seed, args, data)
        results.append(result)
        print(f"seed {seed}: {args.method} test accuracy, students {result['students']}, ensemble "
              f"{result['ensemble']}, train {result['train']}, {result['seconds']} s", flush=True)
    mean = float(np.mean([np.mean(r["students"]) for r in results]))
    summary = {"implementation": "torch", "method": args.method, "lr": args.lr, "epochs": args.epochs,
               "train_size": args.train_size, "init": args.init, "sgd": args.sgd, "lr_step": args.lr_step,
               "milestones": args.milestones, "augment": args.augment,
               "widths": args.widths, "lr_warmup_epochs": args.lr_warmup_epochs, "batch_size": args.batch_size,
               "runs": results, "mean_student": round(mean, 2),
               "params_per_student": [sum(p.numel() for p in SimpleCNN(w).parameters()) for w in args.widths]}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
