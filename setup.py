"""Install RGTP: the core method (`rgtp`), the two project packages and the applications (`rgtp_apps`) mapped
from `projects/`."""

from setuptools import find_packages, setup

#: import name → folder; subpackages (rgtp.flops, rgtp_apps.render, ...) are found below each folder
ROOTS = {
    "rgtp": "rgtp",
    "rgtp_vitdet": "projects/rgtp_vitdet",
    "rgtp_vivit": "projects/rgtp_vivit",
    "rgtp_apps": "projects/rgtp_apps",
}
PACKAGES = [
    pkg for name, root in ROOTS.items() for pkg in (name, *(f"{name}.{s}" for s in find_packages(root)))
]

setup(
    name="rgtp",
    version="0.1.0",
    description="Rollout-Guided Token Pruning (ICIP 2025) for video transformers: ViTDet on ImageNet VID and "
    "ViViT on Kinetics-400 / EPIC-Kitchens",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir=ROOTS,
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
