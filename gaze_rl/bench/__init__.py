"""`gaze-rl bench`'s machinery: the grid of training runs and its summary.

grid (the runs, their `gaze-rl train` commands, local processes), cluster (the same runs as Ray
tasks), curves (learning-curve statistics over seeds), summary (curves.csv, summary.csv / .md and
the plots). gaze_rl.commands.bench runs them; results/ scripts import them from here.
"""
