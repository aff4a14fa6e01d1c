"""Real-time architectures built to train from scratch: BiSeNetV2, DDRNet, Fast-SCNN, ENet, ...

One module per architecture, each registering its builders (``seglab/models/__init__.py``
imports them); ``blocks`` holds the pieces they share.
"""
