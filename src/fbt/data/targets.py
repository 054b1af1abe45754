"""What a target id means beyond the vocabulary: every loader writes it, the loss and the metrics read it."""

IGNORE_INDEX = -100  # target of a position that is not scored; the default ignore_index of cross_entropy
