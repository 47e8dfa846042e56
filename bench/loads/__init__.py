"""The client side of each workload (bench/client.py runs one of them per process).

Each workload function takes (system, port, params, progress), fills
``progress.result`` with its measurements and returns; common.py has what they
share.  Functions that run on nodes are module-level here: dispy ships their
source, dispylike pickles them by value (common.by_value).
"""
