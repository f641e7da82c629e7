"""Validators generated from lanworker/schemas by `python -m lanworker.message.schemacode`."""
