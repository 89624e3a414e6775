from setuptools import find_packages, setup

setup(
    name="ppise",
    version="0.1.0",
    description="Unsupervised person re-ID with Implicit Sample Extension (ISE) in PaddlePaddle",
    packages=find_packages(include=["ppise", "ppise.*"]),
    python_requires=">=3.8",
    install_requires=[],  # pinned environment lives in requirements.txt
)
