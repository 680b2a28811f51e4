from .kind import KIND  # noqa: F401  registers the kind
