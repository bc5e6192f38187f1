"""Inputs of training: the configuration, customer data readers, per-customer profiles,
synthetic data generators and the offer catalogue.
"""
