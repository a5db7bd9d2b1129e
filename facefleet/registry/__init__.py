"""Registry: signed model bundles, signing keys, MLflow tracking, versions and aliases."""
