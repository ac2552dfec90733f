"""Paper-ready reports from cell results: leaderboard tables (Markdown, LaTeX, CSV) and figures.

``reports.make.make_report(results_dir, out_dir)`` writes everything; ``reports.leaderboard``
builds the per-group frame and the tables, ``reports.figures`` the memory-vs-accuracy plots,
``reports.stats`` the Student-t confidence intervals over seeds.
"""
