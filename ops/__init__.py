"""Operator tooling: the `tessera` CLI, the local cluster runner, the chaos harness and their helpers.

Not a way into the service (that is `gateway/`): these drive a cluster from outside, through the
admin API or the storage library.
"""
