"""CycleGAN's image pool: discriminators see a history of generated images, not only the latest."""

from __future__ import annotations

import torch


class ImagePool:
    """Keeps up to ``size`` past images. ``query`` returns a batch in which each image is, with
    probability 1/2 (once the pool is full), swapped for a stored older one (Shrivastava et al. 2017).
    ``size == 0`` disables the pool.
    """

    def __init__(self, size: int = 50):
        if size < 0:
            raise ValueError(f"pool_size must be >= 0, got {size}")
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(()).item() < 0.5:
                i = int(torch.randint(self.size, ()).item())
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.cat(out)

    def state_dict(self) -> dict:
        return {"size": self.size, "images": [im.cpu() for im in self.images]}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.size = state["size"]
        self.images = [im.to(device) for im in state["images"]]
