"""Data pipeline: person datasets, PaddleClas-named transforms, P x K / sequential batch samplers."""
from .datasets import MSMT17, Market1501, PersonDataset
from .loader import build_dataloader, build_dataset, build_sampler, seed_worker
from .samplers import BatchSampler, PKSampler, RandomMultipleGallerySampler
from .transforms import (Compose, Normalize, NormalizeImage, Pad, RandFlipImage, RandomCrop, RandomErasing,
                         ResizeImage, ToCHWImage, ToTensor, build_transforms)
