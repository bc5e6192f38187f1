"""Offline work on the event log: evaluation of policies, the Vowpal Wabbit export and
retraining.
"""
