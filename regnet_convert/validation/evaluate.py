"""Top-1/top-5 counting over a loader, exact and reducible across processes."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from regnet import RegNet
from regnet.fast import fast_model
from regnet_convert.errors import InputError
from regnet_convert.validation.preprocess import normalize

Amp = Literal["off", "bf16", "fp16"]
AMP_DTYPES: dict[Amp, torch.dtype | None] = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Counts:
    """Images seen and correctly classified (integers, so sums across processes are exact)."""

    images: int = 0
    top1: int = 0
    top5: int = 0
    bad_images: list[int] = field(default_factory=list)  # dataset indices that could not be decoded

    def accuracy(self) -> tuple[float, float]:
        """Top-1 and top-5 in percent."""
        n = max(self.images, 1)
        return 100.0 * self.top1 / n, 100.0 * self.top5 / n

    def all_reduce(self) -> Counts:
        """Sum over all processes of a torch.distributed job (no-op when there is none)."""
        if not (dist.is_available() and dist.is_initialized()):
            return self
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        totals = torch.tensor([self.images, self.top1, self.top5], dtype=torch.int64, device=device)
        dist.all_reduce(totals)
        gathered: list[list[int]] = [[] for _ in range(dist.get_world_size())]
        dist.all_gather_object(gathered, self.bad_images)
        images, top1, top5 = (int(v) for v in totals.tolist())
        return Counts(images, top1, top5, sorted(i for part in gathered for i in part))


@dataclass
class Evaluation:
    """How to run the model: device, normalisation, precision, memory format."""

    device: torch.device
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    amp: Amp = "off"
    channels_last: bool = False
    fast: bool = False

    @property
    def feeds_channels_last(self) -> bool:
        """Whether the model takes channels-last input (asked for, or the fast path's layout)."""
        return self.channels_last or self.fast

    def model_on_device(self, model: RegNet) -> torch.nn.Module:
        """The model on the device, in eval mode and the requested memory format (or the fast path)."""
        if self.fast:
            return fast_model(model, self.device)
        model = model.to(self.device).eval()
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    @torch.inference_mode()
    def run(
        self, model: torch.nn.Module, loader: DataLoader, skip_bad_images: bool = False, progress: bool = True
    ) -> tuple[Counts, float]:
        """Count correct top-1/top-5 predictions; returns the counts and the wall time in seconds."""
        counts, start = Counts(), time.perf_counter()
        hits = torch.zeros(2, dtype=torch.int64, device=self.device)  # top-1, top-5; summed on the device
        amp_dtype = AMP_DTYPES[self.amp]
        autocast = torch.autocast(self.device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
        bar = tqdm(total=len(loader.dataset), unit="img", disable=not progress, desc="validating", leave=False)
        for images, labels, indices, errors in loader:
            if bad := [(i, e) for i, e in zip(indices.tolist(), errors, strict=True) if e]:
                if not skip_bad_images:
                    raise InputError(None, f"{bad[0][1]} (use --skip-bad-images to skip such files)")
                counts.bad_images += [i for i, _ in bad]
                keep = torch.tensor([not e for e in errors])
                images, labels = images[keep], labels[keep]
            if len(labels):
                x = normalize(images.to(self.device, non_blocking=True), self.mean, self.std)
                if self.feeds_channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast:
                    logits = model(x)
                ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
                correct = ranked.eq(labels.to(self.device, non_blocking=True)[:, None])
                hits += torch.stack([correct[:, 0].sum(), correct.any(dim=1).sum()])
                counts.images += len(labels)
            bar.update(len(errors))
            if progress:
                top1, top5 = (100.0 * hits / max(counts.images, 1)).tolist()
                bar.set_postfix_str(f"top1 {top1:.2f} top5 {top5:.2f}", refresh=False)
        bar.close()
        counts.top1, counts.top5 = (int(v) for v in hits.tolist())
        return counts, time.perf_counter() - start
