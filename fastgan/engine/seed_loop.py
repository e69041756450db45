"""The iteration written the way the seed tutorials write it: separate D passes on the real and
the fake batch, ``zero_grad``/``backward``/``step`` for each optimizer, losses read back to the
host every iteration. It is the "eager reference" of the benchmarks, and the tests use it to
check that the engine's static iteration computes the same update.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from fastgan.variants import Batch, Variant

from .iteration import variant_optimizers


class SeedLoop:
    def __init__(self, variant: Variant, nets: Dict[str, torch.nn.Module], device: torch.device,
                 opt_kwargs: Optional[dict] = None):
        self.variant, self.nets, self.device = variant, nets, device
        h = variant.hyper
        roles = variant.param_roles()
        self.d_params = [p for r in roles["D"] for p in nets[r].parameters()]
        self.g_params = [p for r in roles["G"] for p in nets[r].parameters()]
        if opt_kwargs is None and h.adam == "torch":
            self.opt_d = torch.optim.Adam(self.d_params, lr=h.lr_d, betas=h.betas,
                                          eps=h.adam_eps)
            self.opt_g = torch.optim.Adam(self.g_params, lr=h.lr_g, betas=h.betas,
                                          eps=h.adam_eps)
        elif opt_kwargs is None:  # the TF1/Keras form: the same optimizer as the engine's
            self.opt_d, self.opt_g = variant_optimizers(variant, self.d_params, self.g_params,
                                                        device)
        else:
            self.opt_d = torch.optim.Adam(self.d_params, lr=h.lr_d, betas=h.betas, **opt_kwargs)
            self.opt_g = torch.optim.Adam(self.g_params, lr=h.lr_g, betas=h.betas, **opt_kwargs)
        self.real_target = torch.tensor(1.0 - h.label_smoothing, device=device)

    def step(self, batch: Batch, z_g: Optional[torch.Tensor] = None, read_losses: bool = True):
        """One D update and one G update on ``batch`` (``z_g``: the G step's fresh noise for
        variants that draw it). Returns the two losses as Python floats, as the seeds print."""
        v, nets = self.variant, self.nets
        gen_roles = [nets[r] for r in v.param_roles()["G"]] if v.d_fakes_from_eval_g else []
        was = [m.training for m in gen_roles]
        for m in gen_roles:   # e.g. Keras' generator.predict (seed 001, line 173)
            m.eval()
        gen = v.generate_train(nets, batch)
        for m, t in zip(gen_roles, was):
            m.train(t)
        self.opt_d.zero_grad()
        loss_d, _, _ = v.d_loss(nets, batch, {k: (t.detach() if k in v.gen_keys else t)
                                              for k, t in gen.items()}, self.real_target)
        loss_d.backward()
        self.opt_d.step()
        if not v.g_reuses_fake:
            if batch.labels is not None:   # the G step's fresh noise, for the same labels
                z_g = z_g.clone()
                v.condition_noise(z_g, batch.labels)
            batch = Batch(real=batch.real, z=z_g, labels=batch.labels,
                          mis_labels=batch.mis_labels)
            gen = v.generate_train(nets, batch)
        self.opt_g.zero_grad()
        loss_g, _ = v.g_loss(nets, batch, gen)
        loss_g.backward()
        self.opt_g.step()
        # The D gradients the G step left behind are cleared by the next D zero_grad, as in
        # the seeds (which do not freeze D).
        if read_losses:
            return loss_d.item(), loss_g.item()
        return None
