"""Parity with PaddleClas (``tools/parity_check.py``, entry ``cli.main``): model, deploy, metrics
and round-trip sections, each returning its table rows. Importing this package is cheap:
paddle and paddleclas load only when a check runs."""
