"""vsalmonn: a plugin-based video agent framework with a streaming test-time-training memory."""

__version__ = "0.1.0"
