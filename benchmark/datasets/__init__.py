"""Datasets of the MSGNN benchmark (Wang et al., IJCAI 2024): what they are, how to obtain and check them.

Every dataset of the paper ends up as ``<root>/<key>/{train,test}/{input,target}/<id>.png``
(real-world sets: ``input`` only) plus a ``manifest.json`` per split recording where each file
came from and its sha256. One module per concern:

- ``datasets.yaml`` + ``specs``: the facts about each dataset (counts, archives, URLs, checksums,
  licences), validated once into ``DatasetSpec``; ``checksums/`` holds the published per-file lists.
- ``acquisition``: find / download / extract the sources (byte-level parts in ``transfer``).
- ``normalise``: write a source folder in the layout above with its manifest.
- ``verification``: re-check a normalised folder against its manifest and spec.
- ``layouts``: pair the files of every naming layout in use; ``images``: the one checked image
  reader; ``synth``: the embedded rain-synth generator (imported on its own: it needs torch).

The prepare stage depends on this one folder. The training/evaluation side (patch stream,
evaluation images) is ``benchmark.data.loading``; the command line is ``msgnn-bench datasets`` in
``benchmark.tools.cli``.
"""
from benchmark.datasets.acquisition import download, ensure_dataset
from benchmark.data.images import DataError
from benchmark.data.layouts import LayoutError, Pair
from benchmark.datasets.normalise import normalise_split, write_manifest
from benchmark.datasets.specs import (REGISTRY_PATH, SPLITS, ChecksumError, DatasetSpec, ManualDownloadRequired,
                                      SplitSpec, dataset_path, get_spec, load_registry)
from benchmark.datasets.transfer import DatasetError, OfflineError
from benchmark.datasets.verification import split_ready, verify

__all__ = ["REGISTRY_PATH", "SPLITS", "ChecksumError", "DataError", "DatasetError", "DatasetSpec", "LayoutError",
           "ManualDownloadRequired", "OfflineError", "Pair", "SplitSpec", "dataset_path", "download",
           "ensure_dataset", "get_spec", "load_registry", "normalise_split", "split_ready", "verify",
           "write_manifest"]
