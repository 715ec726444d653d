"""``python -m demo``: the main job in one command. Record Doom, train the tiny
world model, evaluate it against copy-last-frame, export it, serve it to a
headless client, and write ``runs/demo/report.html``; then play it, given a display."""
