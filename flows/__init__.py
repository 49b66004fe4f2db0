"""Prefect flows: recipes that name the chain's steps in order (installs as bananaflow.flows)."""
