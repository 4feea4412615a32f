"""Converted weights written in the layouts other libraries load: timm's and torchvision's RegNet."""
