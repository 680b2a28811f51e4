"""Child processes that a test stops with Ctrl-C (SIGINT).

A command started in the background by a shell without job control (``cmd &`` in a
script, ``nohup``) inherits SIGINT *ignored*, and Python then installs no
KeyboardInterrupt handler: a test run launched that way would see its children
ignore the Ctrl-C it sends. Children started with :data:`CTRL_C_REACHES` get SIGINT
back at its default whoever launched the suite.
"""

import signal


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


CTRL_C_REACHES = {"preexec_fn": _default_sigint}
