"""`ptc analyze`: fleet analytics on Kafka with Quix Streams (docs/analyze.md).

windows.py aggregates probes into per-path windows (pure), events.py turns
closed windows into path events (pure), sketch.py holds the mergeable delay
quantile sketch, app.py wires them into a Quix Streams application.
"""
