"""Widgets of the desktop app: the viewer, the step viewer, the prompt box, the library browser, dialogs."""
