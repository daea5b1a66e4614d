"""The PySide6 desktop app. Imports engine; never training or torch."""

from desktop._none_refcount import protect_singletons as _protect_singletons

# A PySide6 6.12 bug on Python 3.11 would otherwise abort a long session: see desktop/_none_refcount.py.
SINGLETONS_PROTECTED = _protect_singletons()
