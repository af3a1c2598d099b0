"""Install RGTP: the core method (`rgtp`), the two project packages and the applications (`rgtp_apps`) mapped
from `projects/`."""

from setuptools import setup

setup(
    name="rgtp",
    version="0.1.0",
    description="Rollout-Guided Token Pruning (ICIP 2025) for video transformers: ViTDet on ImageNet VID and "
    "ViViT on Kinetics-400 / EPIC-Kitchens",
    python_requires=">=3.10",
    packages=["rgtp", "rgtp_vitdet", "rgtp_vivit", "rgtp_apps"],
    package_dir={
        "rgtp": "rgtp",
        "rgtp_vitdet": "projects/rgtp_vitdet",
        "rgtp_vivit": "projects/rgtp_vivit",
        "rgtp_apps": "projects/rgtp_apps",
    },
    install_requires=[
        "torch>=2.14",
        "torchvision>=0.29",
        "numpy<2",
        "fvcore",
        "iopath",
        "av",
        "pycocotools",
        "tqdm",
        "matplotlib",
        "Pillow",
        "tabulate",
    ],
    extras_require={"dev": ["pytest", "pytest-xdist", "black", "isort", "ruff", "timm"]},
)
