"""The one exception the frontend raises for a model it cannot import."""

from __future__ import annotations


class FrontendError(Exception):
    """A model tinyodl cannot import. The message is one line naming the file, graph input or node."""
