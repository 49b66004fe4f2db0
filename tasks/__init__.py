"""One thin Prefect task per chain step: policy only, over the core."""
