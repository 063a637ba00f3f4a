"""The DVC stage scripts: thin command lines around the library (``benchmark``); see dvc.yaml."""
