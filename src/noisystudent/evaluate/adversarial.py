"""FGSM and PGD (L-infinity) in pixel space [0, 1], before the model's normalization.

The model is in eval mode (no dropout or stochastic depth: the attack sees the deployed
model). PGD starts from a uniform random point in the eps-ball (or from the clean image),
steps `step_size * sign(grad)`, projects back into the ball and [0, 1], and keeps, per image,
the first perturbation that fools the model, so with the same start and step size more steps
never raise accuracy; one step of size >= eps from the clean image is exactly FGSM. The
default step size is 2.5 * eps / steps (Madry et al.).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _gradient_sign(model, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), labels)
    (gradient,) = torch.autograd.grad(loss, x)
    return gradient.sign()


def fgsm(model, images: torch.Tensor, labels: torch.Tensor, epsilon: float) -> torch.Tensor:
    return (images + epsilon * _gradient_sign(model, images, labels)).clamp(0, 1).detach()


def pgd(model, images: torch.Tensor, labels: torch.Tensor, epsilon: float, steps: int, step_size: float,
        random_start: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    if random_start:
        noise = torch.rand(images.shape, generator=generator).to(images.device) * 2 - 1
        x = (images + epsilon * noise).clamp(0, 1)
    else:
        x = images.clone()
    best, fooled = x.clone(), torch.zeros(len(images), dtype=torch.bool, device=images.device)
    for _ in range(steps):
        x = x + step_size * _gradient_sign(model, x, labels)
        x = torch.min(torch.max(x, images - epsilon), images + epsilon).clamp(0, 1).detach()
        with torch.no_grad():
            fooled_now = model(x).argmax(1) != labels
        # an image fooled once keeps that perturbation; the others follow the latest iterate
        follow = ~fooled
        best[follow] = x[follow]
        fooled |= fooled_now
    return best


def adversarial_accuracy(model, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
                         epsilons: list[float], attack: str = "fgsm", steps: int = 10, random_start: bool = True,
                         batch_size: int = 256, seed: int = 0) -> dict[str, float]:
    """{str(epsilon): accuracy} on uint8 `images`, model in eval mode."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    correct = {eps: 0 for eps in epsilons}
    try:
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device).float() / 255
            y = labels[start:start + batch_size].to(device)
            for eps in epsilons:
                if eps == 0:
                    adversarial = x
                elif attack == "fgsm":
                    adversarial = fgsm(model, x, y, eps)
                else:
                    adversarial = pgd(model, x, y, eps, steps, 2.5 * eps / steps, random_start, generator)
                with torch.no_grad():
                    correct[eps] += (model(adversarial).argmax(1) == y).sum().item()
    finally:
        model.train(was_training)
    return {f"{eps:g}": correct[eps] / len(images) for eps in epsilons}
