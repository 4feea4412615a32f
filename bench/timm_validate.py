"""timm's evaluation pipeline, run as its own process: what a timm user runs to validate the same weights.

A timm RegNetX-400MF (`regnetx_004`) holding the converted weights (RGB stem), `resolve_data_config` +
`create_transform` (PIL decoding, bilinear resize 256, centre crop 224), a torch DataLoader, eager fp32. Usage:
    python bench/timm_validate.py WEIGHTS.safetensors VAL_FOLDER WORKERS BATCH
"""

from __future__ import annotations

import sys
from pathlib import Path

import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

import regnet
from regnet.layouts import LAYOUTS


class Images(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path], transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB"))


def main() -> None:
    weights, folder, workers, batch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    ours = regnet.load(weights)
    to_timm = LAYOUTS["timm"].from_native
    state = {to_timm(k): v for k, v in ours.state_dict().items() if "num_batches" not in k}
    state["stem.conv.weight"] = state["stem.conv.weight"].flip(1)  # BGR file -> RGB model (timm names it alike)
    model = timm.create_model("regnetx_004", pretrained=False).eval()
    model.load_state_dict(state)
    config = resolve_data_config({"crop_pct": 0.875, "interpolation": "bilinear"}, model=model)
    transform = create_transform(**config)
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    loader = torch.utils.data.DataLoader(Images(paths, transform), batch_size=batch, num_workers=workers)
    predictions = []
    with torch.inference_mode():
        for x in loader:
            predictions += model(x).argmax(1).tolist()
    print(len(predictions))


if __name__ == "__main__":
    main()
