"""Paper-ready reports from cell results: leaderboard tables (Markdown, LaTeX, CSV) and figures.

``reports.make.make_report(results_dir, out_dir)`` writes everything. ``reports.records`` builds the
one typed view of the records (a frame, one row per cell) that every other module reads;
``reports.leaderboard`` pools it over seeds into the leaderboard frame and its Markdown;
``reports.comparisons`` makes the paired comparisons and rank intervals, ``reports.coreset_size``
the seed paper's × k, ``reports.stats`` the statistics they use (paired t, TOST, Holm, bootstrap);
``reports.latex`` writes the tables that fit a paper, ``reports.figures`` and
``reports.regime_figures`` draw the figures in ``reports.style``.
"""
