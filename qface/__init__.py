"""qface — multi-task face analysis with Task-adaptive Q-Face."""

__version__ = "0.2.0"
