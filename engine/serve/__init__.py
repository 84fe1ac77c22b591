"""Batches on Ray Serve replicas: one per GPU, on this machine or others that join its Ray
cluster. The bot keeps its fair queue and database; an :class:`~engine.worker.Engine` with a
:class:`RayExecutor` sends each batch to a replica (:class:`~engine.serve.replica.EaselReplica`)
and streams its progress, previews and results back.

    engine = Engine(pool, executors=[RayExecutor(PoolSpec.of(pool), address="auto")])

On each GPU machine, ``easel worker HEAD:6379`` (:func:`run_worker`) joins the cluster.
"""

from engine.serve.client import RayExecutor, run_worker
from engine.serve.replica import APP, DEPLOYMENT, MODELS_PER_REPLICA, EaselReplica

__all__ = ["APP", "DEPLOYMENT", "MODELS_PER_REPLICA", "EaselReplica", "RayExecutor", "run_worker"]
