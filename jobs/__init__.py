"""Ray job entry points. Each module has ``main(argv) -> int``; ``jobs`` imports
``asd_core``, never the other way round."""
