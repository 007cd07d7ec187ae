"""Studies: one paid request that runs many cases of one uploaded model.

A study is a base run request (validated once, like a run's) plus a design that says
which start values change from case to case (:mod:`.designs`), and which statistics of
each case's trace to keep as the study's table (:mod:`.summary`). Both modules are pure
Python over the model's stored summary and numpy arrays, so the API can check a request,
count and price it before anything is stored, and a worker can compute the table without
the database.
"""
