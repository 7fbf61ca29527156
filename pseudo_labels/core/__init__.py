"""The plumbing every stage and command shares: errors, file IO and manifests, defaults,
the per-image runner (local pool, Ray, shards, resume) and command-line helpers.

Imports nothing from ``pseudo_labels.stages``, ``pseudo_labels.datasets`` or the commands.
"""
