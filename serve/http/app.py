"""``build_app(args) -> Application``: the Stitch app on Ray Serve.

    ingress (FastAPI)  --multiplexed model id = adapter-->  ModelReplica x N  (one engine each)
          \\--> AdapterDirectory (adapters registered at run time)
"""
from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from .args import StitchArgs
from .ingress import Ingress
from .replica import AdapterDirectory, ModelReplica


def _replica_options(args: StitchArgs) -> dict[str, Any]:
    options: dict[str, Any] = {
        "ray_actor_options": {"num_gpus": args.num_gpus_per_replica, "num_cpus": args.num_cpus_per_replica},
        "max_ongoing_requests": args.engine.max_queue,
        "health_check_period_s": 10,
    }
    if args.max_replicas is not None and args.max_replicas > args.replicas:
        options["autoscaling_config"] = {"min_replicas": args.replicas, "max_replicas": args.max_replicas,
                                         "target_ongoing_requests": args.engine.max_batch_size}
    else:
        options["num_replicas"] = args.replicas
    return options


def build_app(args: StitchArgs | dict[str, Any]) -> Application:
    """The Stitch application; ``args`` as StitchArgs or its dict form (Ray Serve config ``args``)."""
    args = args if isinstance(args, StitchArgs) else StitchArgs.model_validate(args)
    directory = serve.deployment(AdapterDirectory, num_replicas=1, ray_actor_options={"num_cpus": 0}).bind()
    replica = serve.deployment(ModelReplica, **_replica_options(args)).bind(args, directory)
    return Ingress.options(ray_actor_options={"num_cpus": 0}).bind(replica, directory, args)
