"""What training fits: segments, the next-best-offer model, customer-value scores, the
offer policy, personas and RFM scores.
"""
