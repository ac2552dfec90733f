"""Paper-ready reports from cell results: leaderboard tables (Markdown, LaTeX, CSV) and figures.

``reports.make.make_report(results_dir, out_dir)`` writes everything. ``reports.records`` builds the
one typed view of the records (a frame, one row per cell) that every other module reads;
``reports.leaderboard`` pools it over seeds into the leaderboard frame and its tables,
``reports.figures`` draws the memory-vs-accuracy and other figures, ``reports.stats`` holds the
statistics over seeds.
"""
