"""Reports of runs: `seglab report` (HTML, Markdown, CSV, JSON) and `seglab show`.

Workstation side: no torch and no textual; matplotlib is imported only to draw curves.
"""
