"""Official checkpoints of the Table 1 methods: what each one is and where it comes from.

``checkpoints.yaml`` (the facts: model and builder arguments, training set, source pinned to a
commit, sha256 and git blob id, the authors' published numbers with test set, protocol and
source) validated by ``registry`` into ``CheckpointSpec``s. Downloading and checking the files is
``msgnn-bench weights`` (``benchmark.tools.weights_cli``, over ``benchmark.datasets.transfer``); the
``official`` DVC stage evaluates them. This package reads yaml only (no torch, no network), so the
stages that need the facts depend on it and nothing more.

It sits beside, not inside, ``benchmark/datasets/``: the prepare stage depends on that whole folder,
and an edit to a published number must not re-prepare every dataset.
"""
