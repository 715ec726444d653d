"""The recording format (a JSONL log of ``(frame, controls)`` entries and the
frames it names) and the one owner of frame conversion and resizing.

The lowest layer beside ``models``: numpy and Pillow only, so recorders,
training and the bundle runtime all read and write frames the same way.
"""
