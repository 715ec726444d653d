"""Playing: the pygame loop, gamepad and keyboard input, and the frame sources."""
