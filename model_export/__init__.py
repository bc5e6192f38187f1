"""Offline training: a customer's data or synthetic visits -> feature rows -> models -> a
verified ONNX bundle, its lifecycle and offline evaluation, and the ``tailor`` CLI.

Must not import server.
"""
