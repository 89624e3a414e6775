"""ppise: unsupervised person re-ID with Implicit Sample Extension (ISE) in PaddlePaddle."""
import warnings as _warnings

__version__ = "0.1.0"

# Paddle warnings ppise triggers itself and that tell its users nothing, filtered here (the
# first ppise import, before any paddle import): BatchNorm says it "always tracks global mean
# and variance" in training mode (shown again every epoch, as each catch_warnings() in the
# run resets the once-only registry), and importing paddle looks for ccache (a compiler cache
# for C++ extensions, which ppise does not build).
_warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance",
                         category=UserWarning)
_warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
