"""Benchmark harnesses behind ``python benchmarks/run.py {mnist,defences,official}`` (:mod:`certssbd_bench.command`;
not part of the installed package), and the scripts in the repository's ``benchmarks/``.

* :mod:`certssbd_bench.mnist`: the MNIST 1-vs-0 benchmark of RAB, Cert-SSBD and an undefended model, from a JSON
  configuration (``benchmarks/configs/*.json``).
* :mod:`certssbd_bench.official`: the official Cert-SSB MNIST checkpoints under the official evaluation and
  under ours.
"""
