"""Each variant's defaults are its seed's training loop, step by step.

The seeds' own code is transcribed here: seed 004 and the PyTorch DCGAN example as the PyTorch
they are; the Keras seed 001 and the TF1 seeds 000 and 002 op by op, each line citing the
seed's line (``shared/seeds/00N_*.txt``). The transcription starts from fastgan's initial
weights (copied into the seed's layout) and is fed the batches and noise fastgan's engine drew;
in float64 the losses, every gradient, and the parameters and BatchNorm statistics after each
of 5 iterations agree to 1e-9 (relative to max(1, |value|)) on every CPU backend.

Where fastgan knowingly departs from a seed (docstrings of fastgan/variants), the transcription
takes fastgan's side and says so: BCE in logit space (equal to the seeds' sigmoid + log until D
saturates; bigan's ``+1e-8`` inside the log is checked separately), the data scaling, and the
draws themselves (fed, not re-drawn).
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastgan import ops
from fastgan.engine import Engine, EngineOptions
from fastgan.variants import get_variant

ITERS = 5
TOL = 1e-9
BACKENDS = ["reference", "cuda", "triton"]
# Small batches: Triton runs under its interpreter on CPU.
CONFIG = {"mlp": dict(batch_size=8), "bigan": dict(batch_size=8),
          "gancls": dict(batch_size=4), "convgan": dict(batch_size=4),
          "dcgan": dict(batch_size=4, ngf=8, ndf=8, channels=1)}
MAX_DIFF = {}   # (variant, backend) -> the largest relative difference seen


@pytest.fixture(autouse=True)
def float64(monkeypatch):
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    # The cuda backend's CPU dispatch runs its C++ kernels at every size here.
    monkeypatch.setenv("FASTGAN_CPU_KERNELS", "always")
    yield
    torch.set_default_dtype(old)


def _need(backend):
    if backend not in ops.available_backends("cpu"):
        pytest.skip(f"{backend} backend not available on CPU: {ops.load_error(backend)}")


def _data(v, n=64, seed=4):
    g = torch.Generator().manual_seed(seed)
    s, c = v.hyper.image_size, v.hyper.channels
    return (torch.randint(0, 256, (n, c, s, s), generator=g, dtype=torch.uint8),
            torch.randint(0, 10, (n,), generator=g))


def run_fastgan(name, backend, iters=ITERS, seed=3, memory_format="nchw", precision="fp32",
                **kw):
    """fastgan's engine from a fixed start: (variant, initial state dicts, images, labels,
    per-iteration records of the draws, losses, gradients and state). ``memory_format`` and
    ``precision``: the EngineOptions' (issue 21)."""
    v = get_variant(name, **{**CONFIG[name], **kw})
    torch.manual_seed(seed)
    nets = v.build({})
    init = {r: copy.deepcopy(m.state_dict()) for r, m in nets.items()}
    imgs, labels = _data(v)
    eng = Engine(v, nets, imgs, labels, EngineOptions(batch_size=v.hyper.batch_size, seed=seed,
                                                      memory_format=memory_format,
                                                      precision=precision),
                 torch.device("cpu"))
    got = {}
    for which in ("d_loss", "g_loss"):
        orig = getattr(v, which)

        def wrapped(*a, _orig=orig, _which=which, **k):
            out = _orig(*a, **k)
            got[_which] = out[0].detach().clone()
            return out
        setattr(v, which, wrapped)
    recs = []
    with ops.use_backend(backend):
        for _ in range(iters):
            eng.step()
            clone = lambda t: None if t is None else t.detach().clone()  # noqa: E731
            recs.append(dict(
                idx=clone(eng.idx), real=clone(eng.real), z=clone(eng.z), z_g=clone(eng.z_g),
                labels=clone(eng.batch_labels), mis=clone(eng.mis_labels),
                channels_last=eng.real.dim() == 4 and all(
                    t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
                    for t in [eng.real] + [p for p in eng.d_params + eng.g_params
                                           if p.dim() == 4 and p.shape[1] > 1]),
                d_loss=got["d_loss"], g_loss=got["g_loss"],
                grads={f"{r}.{k}": clone(p.grad) for r, m in nets.items()
                       for k, p in m.named_parameters()},
                state={f"{r}.{k}": clone(t) for r, m in nets.items()
                       for k, t in m.state_dict().items()}))
    return v, init, imgs, labels, recs


def compare(name, backend, recs, seed_recs, state_keys=None):
    """Every iteration: both losses, every gradient, the state after it (``state_keys``: the
    entries the seed has, default all)."""
    worst = 0.0

    def close(a, b, what):
        nonlocal worst
        a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
        assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} vs seed {tuple(b.shape)}"
        err = (a - b).abs().max().item() / max(1.0, b.abs().max().item())
        worst = max(worst, err)
        assert err <= TOL, f"{what}: {err:.3e} from the seed's code"

    for i, (r, s) in enumerate(zip(recs, seed_recs)):
        close(r["d_loss"], s["d_loss"], f"iteration {i + 1}: d_loss")
        close(r["g_loss"], s["g_loss"], f"iteration {i + 1}: g_loss")
        assert set(s["grads"]) == set(r["grads"]), "the seed trains other parameters"
        for k, g in s["grads"].items():
            close(r["grads"][k], g, f"iteration {i + 1}: grad {k}")
        for k in (state_keys or r["state"]):
            close(r["state"][k], s["state"][k], f"iteration {i + 1}: {k}")
    MAX_DIFF[(name, backend)] = worst
    print(f"\n{name}/{backend}: max relative difference {worst:.2e} over {len(recs)} iterations")


# ---- the optimizers the seeds use ------------------------------------------------------------

class TFAdam:
    """TF1's ``tf.train.AdamOptimizer`` (ApplyAdam) and Keras' ``Adam`` with ``decay``:
    lr_d = lr / (1 + decay * iterations); lr_t = lr_d * sqrt(1 - b2^t) / (1 - b1^t);
    m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g²; p -= lr_t * m / (sqrt(v) + eps)."""

    def __init__(self, params, lr, b1=0.9, b2=0.999, eps=1e-8, decay=0.0):
        self.params, self.lr, self.b1, self.b2 = params, lr, b1, b2
        self.eps, self.decay = eps, decay
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.iterations = 0

    def apply(self, grads):
        lr = self.lr * (1.0 / (1.0 + self.decay * self.iterations))
        t = self.iterations + 1
        lr_t = lr * math.sqrt(1.0 - self.b2 ** t) / (1.0 - self.b1 ** t)
        with torch.no_grad():
            for p, g, m, v in zip(self.params, grads, self.m, self.v):
                m.copy_(self.b1 * m + (1.0 - self.b1) * g)
                v.copy_(self.b2 * v + (1.0 - self.b2) * g * g)
                p.sub_(lr_t * m / (torch.sqrt(v) + self.eps))
        self.iterations += 1


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


# ---- seed 001: Keras MLP (mlp) ---------------------------------------------------------------

class Seed001:
    """Seed 001's Keras code. Dense kernels in Keras' [in, out] layout: x @ K + b."""

    def __init__(self, G, D):
        self.gk = [_leaf(G[f"{n}.weight"].T) for n in ("body.0", "body.2", "body.4", "out")]
        self.gb = [_leaf(G[f"{n}.bias"]) for n in ("body.0", "body.2", "body.4", "out")]
        bn = ("body.1", "body.3", "body.5")
        self.gamma = [_leaf(G[f"{n}.weight"]) for n in bn]
        self.beta = [_leaf(G[f"{n}.bias"]) for n in bn]
        self.moving_mean = [G[f"{n}.running_mean"].clone() for n in bn]
        self.moving_var = [G[f"{n}.running_var"].clone() for n in bn]
        self.dk = [_leaf(D[f"net.{i}.weight"].T) for i in range(3)]
        self.db = [_leaf(D[f"net.{i}.bias"]) for i in range(3)]
        self.g_vars = self.gk + self.gb + self.gamma + self.beta
        self.d_vars = self.dk + self.db
        # lines 123-125, 137: Adam(lr=0.0002, beta_1=0.5, decay=8e-8); K.epsilon() = 1e-7
        self.d_opt = TFAdam(self.d_vars, 2e-4, 0.5, 0.999, 1e-7, 8e-8)
        self.gan_opt = TFAdam(self.g_vars, 2e-4, 0.5, 0.999, 1e-7, 8e-8)

    def generator(self, z, training):                                 # lines 42-55
        h = z
        for i in range(3):
            h = h @ self.gk[i] + self.gb[i]                           # Dense (44, 47, 50)
            h = torch.where(h > 0, h, 0.2 * h)                        # LeakyReLU(0.2) (45, 48, 51)
            # BatchNormalization(momentum=0.8) (46, 49, 52), epsilon 1e-3
            if training:   # batch moments (biased); moving averages updated
                mean = h.mean(0)
                var = ((h - mean) ** 2).mean(0)
                with torch.no_grad():
                    self.moving_mean[i] -= (self.moving_mean[i] - mean) * (1 - 0.8)
                    self.moving_var[i] -= (self.moving_var[i] - var) * (1 - 0.8)
            else:          # predict(): the moving statistics
                mean, var = self.moving_mean[i], self.moving_var[i]
            h = (h - mean) * torch.rsqrt(var + 1e-3) * self.gamma[i] + self.beta[i]
        return torch.tanh(h @ self.gk[3] + self.gb[3])                 # line 53 (Reshape: 54)

    def discriminator(self, x):                                         # lines 91-99
        h = x.reshape(x.shape[0], -1)                                   # Flatten (93)
        h = h @ self.dk[0] + self.db[0]
        h = torch.where(h > 0, h, 0.2 * h)                              # 94-95
        h = h @ self.dk[1] + self.db[1]
        h = torch.where(h > 0, h, 0.2 * h)                              # 96-97
        return torch.sigmoid(h @ self.dk[2] + self.db[2])               # 98

    @staticmethod
    def binary_crossentropy(y, p):
        # Keras clips p to [1e-7, 1 - 1e-7]; no effect while D is unsaturated (fastgan: logits)
        p = p.clamp(1e-7, 1 - 1e-7)
        return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()

    def step(self, x_train, random_index, gen_noise, noise, batch_size):
        half = batch_size // 2
        # lines 170-171: random_index = np.random.randint(0, len(x_train) - batch_size / 2)
        legit_images = x_train[random_index: random_index + half]
        synthetic_images = self.generator(gen_noise, training=False).detach()   # 172-173
        x_combined = torch.cat([legit_images, synthetic_images])                 # 179
        y_combined = torch.cat([torch.ones(half, 1), torch.zeros(half, 1)])      # 180
        d_loss = self.binary_crossentropy(y_combined, self.discriminator(x_combined))  # 181
        d_grads = torch.autograd.grad(d_loss, self.d_vars)
        self.d_opt.apply(d_grads)
        y_mislabled = torch.ones(batch_size, 1)                                  # 186-187
        # 194: gan.train_on_batch: G in training mode, D frozen (trainable=False, line 131)
        g_loss = self.binary_crossentropy(y_mislabled,
                                          self.discriminator(self.generator(noise, True)))
        g_grads = torch.autograd.grad(g_loss, self.g_vars)
        self.gan_opt.apply(g_grads)
        return d_loss, g_loss, d_grads, g_grads

    def named(self, grads_or_vars, which):
        G = ["body.0", "body.2", "body.4", "out"]
        names = ([f"G.{n}.weight" for n in G] + [f"G.{n}.bias" for n in G]
                 + [f"G.body.{i}.weight" for i in (1, 3, 5)]
                 + [f"G.body.{i}.bias" for i in (1, 3, 5)]) if which == "G" else (
            [f"D.net.{i}.weight" for i in range(3)] + [f"D.net.{i}.bias" for i in range(3)])
        out = {}
        for n, t in zip(names, grads_or_vars):
            out[n] = t.detach().T.clone() if n.endswith("weight") and t.dim() == 2 else \
                t.detach().clone()
        return out

    def state(self):
        s = {**self.named(self.g_vars, "G"), **self.named(self.d_vars, "D")}
        for i, n in enumerate(("body.1", "body.3", "body.5")):
            s[f"G.{n}.running_mean"] = self.moving_mean[i].clone()
            s[f"G.{n}.running_var"] = self.moving_var[i].clone()
        return s


@pytest.mark.parametrize("backend", BACKENDS)
def test_mlp_is_seed_001(backend):
    _need(backend)
    v, init, imgs, _, recs = run_fastgan("mlp", backend)
    seed = Seed001(init["G"], init["D"])
    x_train = (imgs.double() - 127.5) / 127.5                  # line 155 (in float64 here)
    out = []
    B = v.hyper.batch_size
    for r in recs:
        o = r["idx"][0].item()
        # fastgan's real batch is the seed's contiguous slice (lines 170-171)
        assert torch.equal(r["idx"], torch.arange(o, o + B // 2)), \
            f"real images {r['idx'].tolist()} are not a contiguous slice"
        d_loss, g_loss, dg, gg = seed.step(x_train.reshape(len(x_train), -1), o, r["z"],
                                           r["z_g"], B)
        out.append(dict(d_loss=d_loss, g_loss=g_loss, state=seed.state(),
                        grads={**seed.named(dg, "D"), **seed.named(gg, "G")}))
    compare("mlp", backend, recs, out)


def test_mlp_keras_dense_init():
    """Keras Dense defaults: glorot_uniform kernels (U(±sqrt(6 / (fan_in + fan_out)))), zero
    biases (the step test copies weights, so it cannot see the init)."""
    torch.manual_seed(0)
    nets = get_variant("mlp").build({})
    dense = [m for net in nets.values() for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(dense) == 7
    for m in dense:
        limit = math.sqrt(6.0 / (m.in_features + m.out_features))
        assert not m.bias.any()
        assert m.weight.abs().max() <= limit
        assert abs(m.weight.std().item() - limit / math.sqrt(3)) < 0.05 * limit


def test_mlp_training_and_sample_noise():
    """Training noise np.random.normal(-1, 1, (n, 100)) / 2 (seed 001 lines 172, 186); the sample
    grid's N(0, 1) (line 141)."""
    v = get_variant("mlp")
    g = torch.Generator().manual_seed(0)
    z = torch.empty(200_000, 100)
    v.fill_train_noise(z, None, g)
    assert abs(z.mean().item() + 0.5) < 2e-3 and abs(z.std().item() - 0.5) < 2e-3
    v.fill_noise(z, None, g)
    assert abs(z.mean().item()) < 2e-3 and abs(z.std().item() - 1.0) < 2e-3


# ---- seed 000: TF1 BiGAN (bigan) -------------------------------------------------------------

class Seed000:
    """Seed 000's TensorFlow code; weights [in, out] as ``xavier_init`` makes them (line 65)."""

    def __init__(self, G, E, D, log_eps=0.0):
        W = lambda sd, i: _leaf(sd[f"net.{i}.weight"].T)  # noqa: E731
        b = lambda sd, i: _leaf(sd[f"net.{i}.bias"])      # noqa: E731
        self.D_W1, self.D_b1, self.D_W2, self.D_b2 = W(D, 0), b(D, 0), W(D, 1), b(D, 1)
        self.Q_W1, self.Q_b1, self.Q_W2, self.Q_b2 = W(E, 0), b(E, 0), W(E, 1), b(E, 1)
        self.P_W1, self.P_b1, self.P_W2, self.P_b2 = W(G, 0), b(G, 0), W(G, 1), b(G, 1)
        # line 104-105: theta_G = [Q_W1, Q_W2, Q_b1, Q_b2, P_W1, P_W2, P_b1, P_b2]
        self.theta_G = [self.Q_W1, self.Q_W2, self.Q_b1, self.Q_b2,
                        self.P_W1, self.P_W2, self.P_b1, self.P_b2]
        self.theta_D = [self.D_W1, self.D_W2, self.D_b1, self.D_b2]
        self.names_G = ["E.net.0.weight", "E.net.1.weight", "E.net.0.bias", "E.net.1.bias",
                        "G.net.0.weight", "G.net.1.weight", "G.net.0.bias", "G.net.1.bias"]
        self.names_D = ["D.net.0.weight", "D.net.1.weight", "D.net.0.bias", "D.net.1.bias"]
        # lines 189-193: tf.train.AdamOptimizer(learning_rate=lr), lr = 1e-3
        self.D_solver = TFAdam(self.theta_D, 1e-3)
        self.G_solver = TFAdam(self.theta_G, 1e-3)
        # line 82: tf.log(x + 1e-8); 0 compares with fastgan's logit-space BCE
        self.log_eps = log_eps

    def log(self, x):                                                   # lines 76-82
        return torch.log(x + self.log_eps)

    def losses(self, X, z):
        h = torch.relu(X @ self.Q_W1 + self.Q_b1)                       # line 124
        z_hat = h @ self.Q_W2 + self.Q_b2                               # 125 (156)
        h = torch.relu(z @ self.P_W1 + self.P_b1)                       # 136
        X_hat = torch.sigmoid(h @ self.P_W2 + self.P_b2)                # 137-139 (158)

        def discriminate_image(X, z):                                   # 142-153
            inputs = torch.cat([X, z], 1)
            h = torch.relu(inputs @ self.D_W1 + self.D_b1)
            return torch.sigmoid(h @ self.D_W2 + self.D_b2)
        D_enc = discriminate_image(X, z_hat)                            # 162
        D_gen = discriminate_image(X_hat, z)                            # 167
        D_loss = -torch.mean(self.log(D_enc) + self.log(1 - D_gen))     # 169
        G_loss = -torch.mean(self.log(D_gen) + self.log(1 - D_enc))     # 177
        return D_loss, G_loss

    def step(self, X_mb, z_mb):
        D_loss, _ = self.losses(X_mb, z_mb)                             # 212-214
        d_grads = torch.autograd.grad(D_loss, self.theta_D)
        self.D_solver.apply(d_grads)
        _, G_loss = self.losses(X_mb, z_mb)                             # 216-218: same feed
        g_grads = torch.autograd.grad(G_loss, self.theta_G)
        self.G_solver.apply(g_grads)
        return D_loss, G_loss, d_grads, g_grads

    @staticmethod
    def _named(names, ts):
        return {n: (t.detach().T if t.dim() == 2 else t.detach()).clone()
                for n, t in zip(names, ts)}

    def state(self):
        return {**self._named(self.names_G, self.theta_G), **self._named(self.names_D,
                                                                         self.theta_D)}


def _bigan_seed_run(init, recs, log_eps):
    seed = Seed000(init["G"], init["E"], init["D"], log_eps)
    out = []
    for r in recs:
        d_loss, g_loss, dg, gg = seed.step(r["real"], r["z"])
        out.append(dict(d_loss=d_loss, g_loss=g_loss, state=seed.state(),
                        grads={**seed._named(seed.names_D, dg),
                               **seed._named(seed.names_G, gg)}))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_bigan_is_seed_000(backend):
    _need(backend)
    v, init, imgs, _, recs = run_fastgan("bigan", backend)
    for r in recs:   # X_mb: MNIST in [0, 1], as the seed's reader gives it
        torch.testing.assert_close(r["real"], imgs[r["idx"]].reshape(len(r["idx"]), -1) / 255.0,
                                   rtol=0, atol=1e-15)
    compare("bigan", backend, recs, _bigan_seed_run(init, recs, 0.0))


def test_bigan_seed_log_epsilon_is_the_only_difference():
    """With the seed's own ``log(x + 1e-8)`` the runs stay within ~1e-7 (the knowing
    departure: fastgan's logit-space BCE)."""
    v, init, imgs, _, recs = run_fastgan("bigan", "reference")
    out = _bigan_seed_run(init, recs, 1e-8)
    worst = max(abs(r["d_loss"] - s["d_loss"]).item() for r, s in zip(recs, out))
    assert 1e-10 < worst < 1e-6


# ---- seed 002: TF1 GAN-CLS (gancls) ----------------------------------------------------------

class Seed002:
    """Seed 002's TensorFlow code and the book's InfoGAN generator with tf-slim's defaults.
    NCHW here: TF's NHWC reshape/flatten only permutes fc2's outputs and fc's inputs, so the
    copied weights are fastgan's as they are."""

    def __init__(self, G, D):
        self.g = {k: _leaf(t) for k, t in G.items() if "running" not in k}
        self.d = {k: _leaf(t) for k, t in D.items()}
        # lines 49-50: tf.train.AdamOptimizer(0.0001) for D, (0.001) for G
        self.train_disc = TFAdam(list(self.d.values()), 1e-4)
        self.train_gen = TFAdam(list(self.g.values()), 1e-3)

    @staticmethod
    def batch_norm(x, beta):
        # slim.batch_norm: is_training=True (batch moments), center=True, scale=False,
        # epsilon=0.001; its moving averages are UPDATE_OPS, never run by the seed.
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean = x.mean(dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dims, keepdim=True)
        return (x - mean) * torch.rsqrt(var + 1e-3) + beta.view(shape)

    def generator(self, z):
        g = self.g
        x = torch.relu(z @ g["fc1.weight"].T + g["fc1.bias"])    # slim.fully_connected(z, 1024)
        x = torch.relu(self.batch_norm(x, g["bn1.bias"]))         # batch_norm(activation_fn=relu)
        x = torch.relu(x @ g["fc2.weight"].T + g["fc2.bias"])    # fully_connected(x, 7*7*128)
        x = torch.relu(self.batch_norm(x, g["bn2.bias"]))
        x = x.view(-1, 128, 7, 7)                                 # tf.reshape(x, [-1, 7, 7, 128])
        # conv2d_transpose(x, 64, [4, 4], stride=2, activation_fn=None): "SAME", with a bias
        x = F.conv_transpose2d(x, g["up1.conv.weight"], g["up1.conv.bias"], 2, 1)
        x = torch.relu(self.batch_norm(x, g["up1.bn.bias"]))
        # conv2d_transpose(x, 1, [4, 4], stride=2, activation_fn=tf.nn.sigmoid)
        return torch.sigmoid(F.conv_transpose2d(x, g["up2.conv.weight"], g["up2.conv.bias"], 2, 1))

    def discriminator(self, x, y):                                        # lines 8-24
        d = self.d
        lrelu = lambda t: torch.where(t > 0, t, 0.01 * t)  # noqa: E731  (the book's leaky_relu)
        y = lrelu(y @ d["embed.weight"].T + d["embed.bias"])              # 12
        y = y.reshape(-1, 1, 28, 28)                                      # 13
        x = x.reshape(-1, 1, 28, 28)                                      # 14
        x = torch.cat([x, y], 1)                                          # 15
        x = lrelu(F.conv2d(x, d["conv1.conv.weight"], d["conv1.conv.bias"], 2, 1))   # 17: SAME
        x = lrelu(F.conv2d(x, d["conv2.conv.weight"], d["conv2.conv.bias"], 2, 1))   # 18
        x = x.flatten(1)                                                  # 20
        shared = lrelu(x @ d["fc.weight"].T + d["fc.bias"])              # 21
        disc = torch.sigmoid(shared @ d["out.weight"].T + d["out.bias"])  # 22
        return disc.squeeze(-1)                                           # 23

    def run(self, x, y, misy, z_rand):
        oh = lambda t: F.one_hot(t, 10).double()  # noqa: E731
        z = torch.cat([oh(y), z_rand], 1)                                 # 32
        gen = self.generator(z)                                           # 33
        xin = torch.cat([x, gen.reshape(-1, 784), x], 0)                  # 37
        yin = torch.cat([oh(y), oh(y), oh(misy)], 0)                      # 38
        disc_real, disc_fake, disc_mis = torch.chunk(self.discriminator(xin, yin), 3)  # 39-40
        loss_d = torch.sum((disc_real - 1) ** 2 + (disc_fake ** 2 + disc_mis ** 2) / 2) / 2  # 41
        loss_g = torch.sum((disc_fake - 1) ** 2) / 2                      # 42
        return loss_d, loss_g

    def step(self, x, y, misy, z_rand_d, z_rand_g):
        l_disc, _ = self.run(x, y, misy, z_rand_d)                        # 65
        d_grads = torch.autograd.grad(l_disc, list(self.d.values()))
        self.train_disc.apply(d_grads)
        # 66: the second sess.run re-runs tf.random_normal (line 31): fresh z_rand, same feeds
        _, l_gen = self.run(x, y, misy, z_rand_g)
        g_grads = torch.autograd.grad(l_gen, list(self.g.values()))
        self.train_gen.apply(g_grads)
        return (l_disc, l_gen, {f"D.{k}": t for k, t in zip(self.d, d_grads)},
                {f"G.{k}": t for k, t in zip(self.g, g_grads)})

    def state(self):
        return {**{f"G.{k}": t.detach().clone() for k, t in self.g.items()},
                **{f"D.{k}": t.detach().clone() for k, t in self.d.items()}}


@pytest.mark.parametrize("backend", BACKENDS)
def test_gancls_is_seed_002(backend):
    _need(backend)
    v, init, imgs, labels, recs = run_fastgan("gancls", backend)
    seed = Seed002(init["G"], init["D"])
    out = []
    for r in recs:
        oh = F.one_hot(r["labels"], 10).double()
        assert torch.equal(r["z"][:, :10], oh) and torch.equal(r["z_g"][:, :10], oh)
        x = r["real"].reshape(-1, 784)                  # the placeholder x: [None, n_input]
        d_loss, g_loss, dg, gg = seed.step(x, r["labels"], r["mis"], r["z"][:, 10:],
                                           r["z_g"][:, 10:])
        out.append(dict(d_loss=d_loss, g_loss=g_loss, state=seed.state(),
                        grads={**dg, **gg}))
    # The seed has no moving statistics to compare (it never updates them).
    compare("gancls", backend, recs, out, state_keys=list(out[0]["state"]))


# ---- seed 004: PyTorch conv GAN (convgan) ----------------------------------------------------

class discriminator(nn.Module):     # seed 004, lines 198-226, verbatim
    def __init__(self):
        super(discriminator, self).__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2),  # batch, 32, 28, 28
            nn.LeakyReLU(0.2, True),
            nn.AvgPool2d(2, stride=2),  # batch, 32, 14, 14
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(32, 64, 5, padding=2),  # batch, 64, 14, 14
            nn.LeakyReLU(0.2, True),
            nn.AvgPool2d(2, stride=2)  # batch, 64, 7, 7
        )
        self.fc = nn.Sequential(
            nn.Linear(64 * 7 * 7, 1024),
            nn.LeakyReLU(0.2, True),
            nn.Linear(1024, 1),
            nn.Sigmoid()
        )

    def forward(self, x):
        x = self.conv1(x)
        x = self.conv2(x)
        x = x.view(x.size(0), -1)
        x = self.fc(x)
        return x


class generator(nn.Module):         # seed 004, lines 228-258, verbatim
    def __init__(self, input_size, num_feature):
        super(generator, self).__init__()
        self.fc = nn.Linear(input_size, num_feature)  # batch, 3136=1x56x56
        self.br = nn.Sequential(
            nn.BatchNorm2d(1),
            nn.ReLU(True)
        )
        self.downsample1 = nn.Sequential(
            nn.Conv2d(1, 50, 3, stride=1, padding=1),  # batch, 50, 56, 56
            nn.BatchNorm2d(50),
            nn.ReLU(True)
        )
        self.downsample2 = nn.Sequential(
            nn.Conv2d(50, 25, 3, stride=1, padding=1),  # batch, 25, 56, 56
            nn.BatchNorm2d(25),
            nn.ReLU(True)
        )
        self.downsample3 = nn.Sequential(
            nn.Conv2d(25, 1, 2, stride=2),  # batch, 1, 28, 28
            nn.Tanh()
        )

    def forward(self, x):
        x = self.fc(x)
        x = x.view(x.size(0), 1, 56, 56)
        x = self.br(x)
        x = self.downsample1(x)
        x = self.downsample2(x)
        x = self.downsample3(x)
        return x


def _load_in_order(module, fastgan_sd, role):
    """Copy fastgan's state into a PyTorch module whose state dict lists the same tensors in
    the same order (num_batches_tracked aside); returns {module name: fastgan name}."""
    theirs = [k for k in module.state_dict() if not k.endswith("num_batches_tracked")]
    ours = list(fastgan_sd)
    assert len(theirs) == len(ours), (theirs, ours)
    sd = module.state_dict()
    names = {}
    for a, b in zip(theirs, ours):
        assert sd[a].shape == fastgan_sd[b].shape, (a, b)
        sd[a] = fastgan_sd[b].clone()
        names[a] = f"{role}.{b}"
    module.load_state_dict(sd)
    return names


def _torch_state(mods_names):
    return {n: t.detach().clone() for m, names in mods_names
            for k, t in m.state_dict().items() if k in names for n in [names[k]]}


def _torch_grads(module, names):
    return {names[k]: p.grad.detach().clone() for k, p in module.named_parameters()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_convgan_is_seed_004(backend):
    _need(backend)
    v, init, imgs, _, recs = run_fastgan("convgan", backend)
    z_dimension = 100
    D = discriminator()                                                # line 261
    G = generator(z_dimension, 3136)                                   # 262
    dn, gn = _load_in_order(D, init["D"], "D"), _load_in_order(G, init["G"], "G")
    criterion = nn.BCELoss()                                           # 265
    d_optimizer = torch.optim.Adam(D.parameters(), lr=0.0003)          # 268
    g_optimizer = torch.optim.Adam(G.parameters(), lr=0.0003)          # 269
    out = []
    for r in recs:
        # fastgan's batch in [-1, 1] (the seed normalises with MNIST's mean/std: a departure)
        img = r["real"]
        num_img = img.size(0)                                          # 273
        real_img = img                                                 # 275
        # 276-277, as (n, 1): today's BCELoss refuses the seed's (n,) targets for (n, 1) outputs
        real_label = torch.ones(num_img, 1)
        fake_label = torch.zeros(num_img, 1)
        real_out = D(real_img)                                         # 280
        d_loss_real = criterion(real_out, real_label)                  # 281
        z = r["z"]                                                     # 285: torch.randn
        fake_img = G(z)                                                # 286
        fake_out = D(fake_img)                                         # 287
        d_loss_fake = criterion(fake_out, fake_label)                  # 288
        d_loss = d_loss_real + d_loss_fake                             # 292
        d_optimizer.zero_grad()                                        # 293
        d_loss.backward()                                              # 294
        d_grads = _torch_grads(D, dn)
        d_optimizer.step()                                             # 295
        z = r["z_g"]                                                   # 299: torch.randn
        fake_img = G(z)                                                # 300
        output = D(fake_img)                                           # 301
        g_loss = criterion(output, real_label)                         # 302
        g_optimizer.zero_grad()                                        # 305
        g_loss.backward()                                              # 306
        g_grads = _torch_grads(G, gn)
        g_optimizer.step()                                             # 307
        out.append(dict(d_loss=d_loss.detach(), g_loss=g_loss.detach(),
                        grads={**d_grads, **g_grads}, state=_torch_state([(D, dn), (G, gn)])))
    compare("convgan", backend, recs, out)


# ---- the PyTorch DCGAN example (dcgan) -------------------------------------------------------
# pytorch/examples dcgan/main.py (nz = 100, 64x64), its classes and training loop.

class Generator(nn.Module):
    def __init__(self, nz, ngf, nc):
        super(Generator, self).__init__()
        self.main = nn.Sequential(
            # input is Z, going into a convolution
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            # state size. (ngf*8) x 4 x 4
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            # state size. (ngf*4) x 8 x 8
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            # state size. (ngf*2) x 16 x 16
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            # state size. (ngf) x 32 x 32
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh()
            # state size. (nc) x 64 x 64
        )

    def forward(self, input):
        return self.main(input)


class Discriminator(nn.Module):
    def __init__(self, nc, ndf):
        super(Discriminator, self).__init__()
        self.main = nn.Sequential(
            # input is (nc) x 64 x 64
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf) x 32 x 32
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*2) x 16 x 16
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*4) x 8 x 8
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*8) x 4 x 4
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid()
        )

    def forward(self, input):
        output = self.main(input)
        return output.view(-1, 1).squeeze(1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dcgan_is_the_pytorch_example(backend):
    _need(backend)
    v, init, imgs, _, recs = run_fastgan("dcgan", backend)
    compare("dcgan", backend, recs, dcgan_example_records(recs, init, nc=1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_dcgan_channels_last_is_the_pytorch_example(backend):
    """--memory-format channels_last (issue 21): NHWC buffers, parameters and layers, the same
    numbers as the (NCHW) PyTorch example in float64. RGB so that every layout is NHWC for real
    (a 1-channel batch is both layouts at once)."""
    _need(backend)
    v, init, imgs, _, recs = run_fastgan("dcgan", backend, memory_format="channels_last",
                                         channels=3)
    assert all(r["channels_last"] for r in recs), "the run did not train in channels_last"
    compare("dcgan-channels_last", backend, recs, dcgan_example_records(recs, init, nc=3))


def dcgan_example_records(recs, init, nc=1, ngf=8, ndf=8):
    """The PyTorch DCGAN example's training loop fed fastgan's draws (``recs``) from fastgan's
    initial weights (``init``): per-iteration losses, gradients and state, in the default
    dtype."""
    nz = 100
    netG, netD = Generator(nz, ngf, nc), Discriminator(nc, ndf)
    gn, dn = _load_in_order(netG, init["G"], "G"), _load_in_order(netD, init["D"], "D")
    criterion = nn.BCELoss()
    real_label, fake_label = 1, 0
    optimizerD = torch.optim.Adam(netD.parameters(), lr=0.0002, betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=0.0002, betas=(0.5, 0.999))
    out = []
    for r in recs:
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        netD.zero_grad()
        real_cpu = r["real"]
        batch_size = real_cpu.size(0)
        label = torch.full((batch_size,), real_label, dtype=real_cpu.dtype)
        output = netD(real_cpu)
        errD_real = criterion(output, label)
        errD_real.backward()
        noise = r["z"].view(batch_size, nz, 1, 1)       # torch.randn(batch_size, nz, 1, 1)
        fake = netG(noise)
        label.fill_(fake_label)
        output = netD(fake.detach())
        errD_fake = criterion(output, label)
        errD_fake.backward()
        errD = errD_real + errD_fake
        d_grads = _torch_grads(netD, dn)
        optimizerD.step()
        # (2) Update G network: maximize log(D(G(z)))
        netG.zero_grad()
        label.fill_(real_label)  # fake labels are real for generator cost
        output = netD(fake)
        errG = criterion(output, label)
        errG.backward()
        g_grads = _torch_grads(netG, gn)
        optimizerG.step()
        out.append(dict(d_loss=errD.detach(), g_loss=errG.detach(), grads={**d_grads, **g_grads},
                        state=_torch_state([(netD, dn), (netG, gn)])))
    return out


def test_dcgan_kernel5_is_seed_003():
    """Seed 003 (lines 102-105): 5x5 convolutions with zero-initialised biases and
    tf.truncated_normal(stddev=0.02) weights (re-drawn beyond two standard deviations)."""
    v = get_variant("dcgan", kernel=5, image_size=32, ngf=16, ndf=16)
    torch.manual_seed(0)
    nets = v.build({})
    convs = [m for net in nets.values() for m in net.modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert convs and all(m.bias is not None and not m.bias.any() for m in convs)
    w = torch.cat([m.weight.flatten() for m in convs])
    assert w.abs().max() <= 0.04
    # the std of N(0, 0.02²) truncated at ±2σ is 0.02 · 0.8796
    assert abs(w.std().item() - 0.02 * 0.8796) < 5e-4
    assert all(m.kernel_size == (5, 5) for m in convs if m.kernel_size != (4, 4))
    # the PyTorch example's 4x4 default stays bias-free with plain N(0, 0.02)
    d4 = get_variant("dcgan", image_size=32, ngf=16, ndf=16).build({})
    assert all(m.bias is None for net in d4.values() for m in net.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))
