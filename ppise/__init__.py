"""ppise: unsupervised person re-ID with Implicit Sample Extension (ISE) in PaddlePaddle."""
__version__ = "0.1.0"
