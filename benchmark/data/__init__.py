"""Reading image pairs from disk: the checked reader, naming layouts, training patches, evaluation images."""
