"""Entry points for Prefect: prefect.yaml and ``bananaflow setup``."""
