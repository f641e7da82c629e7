"""Integration fixtures live in tests/helpers/aws_fixtures.py (shared with tests/faults)."""

from tests.helpers.aws_fixtures import TOOL, receive_all

__all__ = ["TOOL", "receive_all"]
