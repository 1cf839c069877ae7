"""Generated from proto/agentmesh/v1 by sdk/python/generate.py: do not edit.

grpcio-tools 1.85.1; regenerate with `.venv/bin/python sdk/python/generate.py`.
"""
