"""The PySide6 desktop app. Imports engine; never training or torch."""
