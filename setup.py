"""ppise: ``pip install -e .`` installs the package and everything it imports at run time.

Ranges here are the compatible ones (what ppise is known to work with); requirements.txt
keeps the exact, tested pins of one consistent environment (``pip install -r
requirements.txt`` for a reproducible setup). GPU users: install ``paddlepaddle-gpu``
first, then ``pip install --no-deps -e .`` (pip cannot tell that paddlepaddle-gpu provides
paddle and would add the CPU build next to it), then the other dependencies listed below.
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "paddlepaddle>=3.3,<3.4",       # 3.3 is what ppise is tested on (PIR export, dygraph APIs)
    "numpy>=1.23,<2",               # faiss-cpu / opencv wheels below are built against numpy 1.x here
    "scipy>=1.10,<1.14",
    "scikit-learn>=1.3,<1.6",
    "faiss-cpu>=1.7.4,<1.9",
    "opencv-python>=4.6,<4.11",     # 4.11+ wheels require numpy 2
    "PyYAML>=6.0,<7",
    "Pillow>=9.0",
    "psutil>=5.9",
]
EXTRAS_REQUIRE = {
    # PaddleClas backbones by name (Arch.Backbone: any PaddleClas zoo model) and the parity tools
    "paddleclas": ["paddleclas>=2.6,<2.7"],
    "visualdl": ["visualdl>=2.5"],   # Global.use_visualdl: True
    "test": ["pytest>=7.4", "hypothesis>=6.90"],
}

setup(
    name="ppise",
    version="0.1.0",
    description="Unsupervised person re-ID with Implicit Sample Extension (ISE) in PaddlePaddle",
    packages=find_packages(include=["ppise", "ppise.*", "synthreid", "synthreid.*"]),
    python_requires=">=3.8",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
