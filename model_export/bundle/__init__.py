"""The bundle: ONNX export, verification and the bundle lifecycle (diff, promote, roll back),
and the model card.
"""
