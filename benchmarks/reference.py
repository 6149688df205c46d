"""A faithful copy of the reference tutorial's model and sampler (the UvA deep-learning tutorial on
energy-based models), used only as a yardstick by the benchmarks. Its CNN outputs −E; its Swish is
x·sigmoid(x) written out; its sampler works in place on ``.data`` and calls ``.backward()``."""

import torch
from torch import nn


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class CNNModel(nn.Module):
    def __init__(self, hidden_features=32, out_dim=1):
        super().__init__()
        c1, c2, c3 = hidden_features // 2, hidden_features, hidden_features * 2
        self.cnn_layers = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=5, stride=2, padding=4), Swish(),
            nn.Conv2d(c1, c2, kernel_size=3, stride=2, padding=1), Swish(),
            nn.Conv2d(c2, c3, kernel_size=3, stride=2, padding=1), Swish(),
            nn.Conv2d(c3, c3, kernel_size=3, stride=2, padding=1), Swish(),
            nn.Flatten(), nn.Linear(c3 * 4, c3), Swish(), nn.Linear(c3, out_dim))

    def forward(self, x):
        return self.cnn_layers(x).squeeze(dim=-1)


def copy_weights(reference: CNNModel, ours) -> None:
    """Give ``ours`` (an ebm_play CNNEnergy, which returns E) the reference's weights, sign-flipped
    at the head because the reference returns −E."""
    src = [m for m in reference.cnn_layers if isinstance(m, (nn.Conv2d, nn.Linear))]
    dst = [m for m in (*ours.body, ours.head) if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for s, d in zip(src, dst):
            d.weight.copy_(s.weight)
            d.bias.copy_(s.bias)
        dst[-1].weight.neg_()
        dst[-1].bias.neg_()


def generate_samples(model, inp_imgs, steps=60, step_size=10, noise_sd=0.005, generator=None):
    """The tutorial's ``Sampler.generate_samples`` (noise drawn from ``generator`` so runs can be compared)."""
    is_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad = False
    inp_imgs.requires_grad = True
    had_gradients_enabled = torch.is_grad_enabled()
    torch.set_grad_enabled(True)
    noise = torch.randn(inp_imgs.shape, device=inp_imgs.device)
    for _ in range(steps):
        noise.copy_(torch.randn(inp_imgs.shape, generator=generator, device=inp_imgs.device) * noise_sd)
        inp_imgs.data.add_(noise.data)
        inp_imgs.data.clamp_(min=-1.0, max=1.0)
        out_imgs = -model(inp_imgs)
        out_imgs.sum().backward()
        inp_imgs.grad.data.clamp_(-0.03, 0.03)
        inp_imgs.data.add_(-step_size * inp_imgs.grad.data)
        inp_imgs.grad.detach_()
        inp_imgs.grad.zero_()
        inp_imgs.data.clamp_(min=-1.0, max=1.0)
    for p in model.parameters():
        p.requires_grad = True
    model.train(is_training)
    torch.set_grad_enabled(had_gradients_enabled)
    return inp_imgs
