"""Feed validation crops to the model: worker processes, pinned memory, shards for torch.distributed."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from regnet_convert.process import ignore_interruptions
from regnet_convert.validation.dataset import Sample
from regnet_convert.validation.preprocess import RESIZE_DTYPES, ImageDecodeError, Preset, load_crop, to_chw_tensor


@dataclass(frozen=True)
class CropSettings:
    """How images become network input (before normalisation, which happens on the device)."""

    preset: Preset = "mmcls"
    resize: int = 256
    crop: int = 224
    channel_order: str = "BGR"


class ValidationImages(Dataset):
    """CHW crops (uint8 for mmcls, float32 for pycls) with their labels; an undecodable image yields its error."""

    def __init__(self, samples: list[Sample], settings: CropSettings) -> None:
        self.samples = samples
        self.settings = settings

    def __len__(self) -> int:
        return len(self.samples)

    def placeholder(self) -> np.ndarray:
        """Zeros in place of an undecodable image's crop, of the crops' shape and dtype (the batch must stack)."""
        return np.zeros((3, self.settings.crop, self.settings.crop), RESIZE_DTYPES[self.settings.preset])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, str]:
        path, label = self.samples[index]
        s = self.settings
        try:
            crop = load_crop(path, resize=s.resize, crop=s.crop, preset=s.preset)
        except ImageDecodeError as error:
            return torch.from_numpy(self.placeholder()), label, index, str(error)
        return to_chw_tensor(crop, s.channel_order), label, index, ""


def shard(samples: list[Sample], rank: int, world_size: int) -> list[Sample]:
    """This process's share: every world_size-th sample, no padding and no duplicates."""
    return samples[rank::world_size]


def _worker_excepthook(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
    """A worker's stray errors, but not the main process hanging up on it (it is ending the run: its tensor
    hand-over thread then meets a closed connection), which is no error of the worker's."""
    if not issubclass(kind, (ConnectionError, EOFError)):
        sys.__excepthook__(kind, value, traceback)


def _worker_init(_worker_id: int) -> None:
    """Workers ignore Ctrl-C, SIGTERM and SIGHUP sent to the process group: the main process decides, ends the
    run with one line and shuts them down."""
    ignore_interruptions()
    sys.excepthook = _worker_excepthook


def make_loader(
    samples: list[Sample], settings: CropSettings, batch_size: int, workers: int, pin_memory: bool
) -> DataLoader:
    """A loader over `samples` in order (each exactly once); its workers leave interruptions to the main process."""
    return DataLoader(
        ValidationImages(samples, settings),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_worker_init if workers > 0 else None,
    )
