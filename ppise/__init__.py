"""ppise: unsupervised person re-ID with Implicit Sample Extension (ISE) in PaddlePaddle."""
import warnings as _warnings

__version__ = "0.1.0"

# Paddle warnings that tell ppise's users nothing, filtered before any paddle import: BatchNorm's
# "always tracks global mean and variance" (again every epoch, as each catch_warnings() resets
# the once-only registry) and the search for ccache (ppise builds no C++ extension).
_warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance",
                         category=UserWarning)
_warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
