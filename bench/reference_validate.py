"""The reference pipeline, run as its own process: what a user would write without regnet-validate.

pycls 0.1.1's own RegNetX-400MF (eager fp32) loaded from a pycls checkpoint, OpenCV preprocessing (decode,
short side to 256, centre crop 224, pycls's mean/std) in a torch DataLoader. Usage:
    python bench/reference_validate.py CHECKPOINT.pyth VAL_FOLDER WORKERS BATCH
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from pycls.core import builders
from pycls.core.config import cfg

MEAN, STD = np.array([0.406, 0.456, 0.485], np.float32), np.array([0.225, 0.224, 0.229], np.float32)  # BGR


class Images(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = cv2.imread(str(self.paths[i]))
        h, w = image.shape[:2]
        scale = 256 / min(h, w)
        image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
        h, w = image.shape[:2]
        y, x = (h - 224) // 2, (w - 224) // 2
        crop = (image[y : y + 224, x : x + 224].astype(np.float32) / 255 - MEAN) / STD
        return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))


def main() -> None:
    checkpoint, folder, workers, batch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    cfg.MODEL.TYPE, cfg.MODEL.NUM_CLASSES = "regnet", 1000
    cfg.REGNET.DEPTH, cfg.REGNET.W0, cfg.REGNET.WA, cfg.REGNET.WM, cfg.REGNET.GROUP_W = 22, 24, 24.48, 2.54, 16
    model = builders.build_model().eval()
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["model_state"])
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    loader = torch.utils.data.DataLoader(Images(paths), batch_size=batch, num_workers=workers)
    predictions = []
    with torch.inference_mode():
        for x in loader:
            predictions += model(x).argmax(1).tolist()
    print(len(predictions))


if __name__ == "__main__":
    main()
