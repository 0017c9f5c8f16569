"""Tests on real multi-node topologies: replicas, Sentinel (issue #12)."""
