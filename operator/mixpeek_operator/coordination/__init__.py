"""Coordination between replicas on `coordination.k8s.io/v1` Leases; Kubernetes is the engine.

- `lease`: one Lease's record, client-go's rules about it (expiry by our own clock), reading
  and writing it; the replica's identity and the timings.
- `holder`: `LeaseHolder` acquires one Lease, keeps it renewed (fencing by time) and releases it.
- `election`: leader election (active/standby), one Lease every replica wants.
- `ring` and `sharding`: rendezvous sharding (active/active), one Lease per replica; the ring's
  pure rules and the coordinator that runs them. Every replica watches every object.
- `assignment`, `assigner` and `label_shards`: label shards, on the same ring and hash: the
  elected assigner writes each object's owner into a label, each replica watches only its
  own objects, and an object moves through a drain handshake.
"""

from mixpeek_operator.coordination.assigner import Assigner
from mixpeek_operator.coordination.election import DEFAULT_LEASE_NAME, LeaderElector
from mixpeek_operator.coordination.label_shards import LabelShardMember
from mixpeek_operator.coordination.lease import LeaseTimings, operator_identity
from mixpeek_operator.coordination.ring import ShardKey, shard_key_of
from mixpeek_operator.coordination.sharding import ShardCoordinator

__all__ = [
    "DEFAULT_LEASE_NAME",
    "Assigner",
    "LabelShardMember",
    "LeaderElector",
    "LeaseTimings",
    "ShardCoordinator",
    "ShardKey",
    "operator_identity",
    "shard_key_of",
]
