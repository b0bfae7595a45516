"""Data sets of the papers' experiments: CIFAR-10 (image reconstruction), Omniglot (one-shot classification) and
Penn Treebank (language modelling), fetched from their official sources and validated before a run depends on them.

Loaders are plain functions returning arrays, so experiments decide batching, splits and devices themselves.
"""
from plasticnet.data.cifar10 import CLASSES as CIFAR10_CLASSES
from plasticnet.data.cifar10 import load_cifar10
from plasticnet.data.fetch import download
from plasticnet.data.omniglot import OmniglotCharacters, load_omniglot
from plasticnet.data.ptb import Corpus, batchify, load_ptb
from plasticnet.data.validate import check

__all__ = [
    "CIFAR10_CLASSES", "Corpus", "OmniglotCharacters",
    "batchify", "check", "download", "load_cifar10", "load_omniglot", "load_ptb",
]
