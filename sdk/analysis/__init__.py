"""Statistics and experiment reports over the event log (read through :mod:`sdk.logs`).

Must not import server or model_export.
"""
