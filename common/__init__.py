"""Shared code for all three problems: data, metrics, visualisation, training utilities."""
