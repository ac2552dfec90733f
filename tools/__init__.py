"""Developer tools that stand on the engine and the plug-ins: speed benchmarks (``nox -s perf``) and checks.

They are not part of the engine (``benchmark/``), so they may import methods and tasks.
"""
