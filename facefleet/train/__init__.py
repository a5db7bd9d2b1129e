"""Training: model search, open-set thresholds, evaluation, version YAML, the training run."""
