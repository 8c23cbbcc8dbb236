"""Federated training with Flower: each client trains on its own users' events and sends only weights.

- partition.py: one log split into client logs with disjoint users (IID, or by dominant item category)
- local.py: a client's local epochs and validation; the ``[federated]`` config
- flower.py: the Flower ClientApp and ServerApp (FedAvg; optional client-side DP of the updates)
- runner.py: the deployment engine's processes (SuperLink, SuperNodes, ``flwr run``)
"""
