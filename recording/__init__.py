"""The recording format (a JSONL log of ``(frame, controls)`` entries and the
frames it names), the one owner of frame conversion and resizing, and MP4 video.

The lowest layer beside ``models``: numpy and Pillow (PyAV for video) only, so
recorders, training and the bundle runtime all read and write frames the same way.
"""
