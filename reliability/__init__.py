"""The reliability suite: fuzzing, a hostile corpus, sustained load, faults and overload
against real ``bentoml serve`` processes, with a JSON report and a summary table.

``python -m reliability --repository models --data-dir ../shared/datasets`` (short profile,
what CI runs) or ``--profile long`` (by hand: 100,000+ requests of load, more fuzzing).
"""
