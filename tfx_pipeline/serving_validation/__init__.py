"""Serving validation before a push: the candidate SavedModel in a real model server, queried
over the TF Serving protocol (the project's own InfraValidator; see components/serving_validator)."""
