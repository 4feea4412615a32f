"""Top-1/top-5 counting over batches of crops, for one model or several fed the same crops; exact and reducible
across processes."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.distributed as dist
from tqdm import tqdm

from regnet import RegNet
from regnet.fast import fast_model
from regnet_convert.errors import InputError
from regnet_convert.process import notice, printable, raise_if_interrupted
from regnet_convert.validation.distributed import check_peers
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
        check_peers()  # a rank that failed (a bad image, an interruption) ends every rank with its error
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        totals = torch.tensor([self.images, self.top1, self.top5], dtype=torch.int64, device=device)
        dist.all_reduce(totals)
        gathered: list[list[int]] = [[] for _ in range(dist.get_world_size())]
        dist.all_gather_object(gathered, self.bad_images)
        images, top1, top5 = (int(v) for v in totals.tolist())
        return Counts(images, top1, top5, sorted(i for part in gathered for i in part))


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, Sequence[str]]
"""BGR NCHW crops (uint8 or float32), labels, dataset indices, and an error message per image ("" if decoded)."""


@dataclass
class Feed:
    """One model of a run and how its input is made from the shared BGR crops."""

    name: str
    model: torch.nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "BGR"  # an RGB model gets the crops' channels reversed, on the tensor


@dataclass
class Evaluation:
    """How to run the models: device, precision, memory format."""

    device: torch.device
    amp: Amp = "off"
    channels_last: bool = False
    fast: bool = False

    @property
    def feeds_channels_last(self) -> bool:
        """Whether the model takes channels-last input (asked for, or the fast path's layout)."""
        return self.channels_last or self.fast

    def model_on_device(self, model: RegNet, progress: bool = False) -> torch.nn.Module:
        """The model on the device, in eval mode and the requested memory format (or the fast path; with
        `progress`, a first-time compilation of it is announced on stderr)."""
        if self.fast:
            return fast_model(
                model,
                self.device,
                notice=notice if progress else lambda _: None,
                warn=lambda line: tqdm.write(line, file=sys.stderr),  # an untrusted package cache: even with -q
            )
        model = model.to(self.device).eval()
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def hits(self, feed: Feed, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Top-1 and top-5 hits of one batch of BGR crops already on the device (int64, on the device)."""
        if feed.channel_order == "RGB":
            images = images.flip(1)
        x = normalize(images, feed.mean, feed.std)
        if self.feeds_channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        amp_dtype = AMP_DTYPES[self.amp]
        with torch.autocast(self.device.type, dtype=amp_dtype) if amp_dtype else nullcontext():
            logits = feed.model(x)
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct = ranked.eq(labels[:, None])
        return torch.stack([correct[:, 0].sum(), correct.any(dim=1).sum()])

    @torch.inference_mode()
    def run(
        self,
        feeds: Sequence[Feed],
        batches: Iterable[Batch],
        total: int,
        skip_bad_images: bool = False,
        progress: bool = True,
    ) -> tuple[list[Counts], float]:
        """Count each model's correct top-1/top-5 predictions over `total` images, every batch fed to every model
        in turn (each image decoded once); returns the counts in `feeds` order and the wall time in seconds."""
        start, images_done = time.perf_counter(), 0
        bad_images: list[int] = []
        hits = [torch.zeros(2, dtype=torch.int64, device=self.device) for _ in feeds]  # top-1, top-5
        sweep = len(feeds) > 1
        bar = tqdm(total=total * len(feeds), unit="img", disable=not progress, desc="validating", leave=False)
        with bar:  # cleared however the loop ends: an error line never lands on the bar's line
            for images, labels, indices, errors in batches:
                raise_if_interrupted()
                if bad := [(i, e) for i, e in zip(indices.tolist(), errors, strict=True) if e]:
                    if not skip_bad_images:
                        raise InputError(None, f"{bad[0][1]} (use --skip-bad-images to skip such files)")
                    bad_images += [i for i, _ in bad]
                    keep = torch.tensor([not e for e in errors])
                    images, labels = images[keep], labels[keep]
                if len(labels):
                    images = images.to(self.device, non_blocking=True)
                    labels = labels.to(self.device, non_blocking=True)
                images_done += len(labels)
                if progress and sweep:
                    bar.set_postfix_str(f"image {images_done + len(bad_images):,}/{total:,}", refresh=False)
                for k, feed in enumerate(feeds):
                    if sweep:
                        bar.set_description_str(f"{printable(feed.name)} ({k + 1}/{len(feeds)})", refresh=False)
                    if len(labels):
                        hits[k] += self.hits(feed, images, labels)
                    bar.update(len(errors))
                if progress and not sweep:
                    top1, top5 = (100.0 * hits[0] / max(images_done, 1)).tolist()
                    bar.set_postfix_str(f"top1 {top1:.2f} top5 {top5:.2f}", refresh=False)
        raise_if_interrupted()  # one that landed during the last batches: the counts would be cut short
        counts = []
        for h in hits:
            top1, top5 = (int(v) for v in h.tolist())
            counts.append(Counts(images_done, top1, top5, list(bad_images)))
        return counts, time.perf_counter() - start
