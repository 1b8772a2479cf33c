"""The sizing guide's unit costs and formulas (docs/capacity.md), in one place.

`docs/capacity.md` quotes every number in `UNIT_COSTS`, and a test checks that the
two agree; `bench_scale` prints what these formulas predict for its own load beside
what it measures. So the guide, its arithmetic and the benchmark cannot drift apart.

CPU is in seconds of one core, memory in bytes, unless a name says otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "UNIT_COSTS",
    "Load",
    "Sizing",
    "UnitCosts",
    "gateway_cpu",
    "gateway_memory",
    "redis_cpu",
    "redis_memory",
    "shared_box_connect_seconds",
    "size",
]


@dataclass(frozen=True)
class UnitCosts:
    """What one unit of work costs, as measured by the benchmarks (docs/capacity.md says where)."""

    # Gateway process.
    gateway_connect_us: float  # CPU per socket opened (handshake, token, two subscribes)
    # The same with the load clients and four other gateways on the same two cores (the
    # full scale bench): each process's caches and turns are shared.
    gateway_connect_contended_us: float
    gateway_event_us: float  # CPU per event a gateway takes from pub/sub (before fan-out)
    gateway_delivery_us: float  # CPU per event frame written to one socket
    gateway_idle_base: float  # cores a gateway with no traffic uses (probes, metrics)
    gateway_idle_per_1000_sockets: float  # cores held by 1,000 idle sockets (heartbeats on)
    gateway_kib_per_socket: float  # resident memory per open socket
    gateway_base_mib: float  # resident memory of a gateway with no sockets
    gateway_sockets_per_process: int  # the file-descriptor bound per process, less headroom
    # Ingest and processor (per alert accepted and applied).
    ingest_alert_us: float
    processor_alert_us: float
    # Redis.
    redis_alert_us: float  # the processor's Lua step, per new alert (incl. its event)
    redis_event_us: float  # per event published on one channel (stream append + PUBLISH)
    redis_fanout_us: float  # per gateway a published event is pushed to
    redis_connect_us: float  # per socket connecting (its channel head reads, shared)
    redis_idle_per_gateway: float  # cores: each gateway's pub/sub probe and health reads
    redis_kib_per_alert: float  # a stored alert (record, indexes, timeline)
    redis_kib_per_stream_entry: float  # one retained event in a channel's stream
    redis_core_budget: float  # what one Redis primary can give before latency suffers
    # The scale bench's own load clients (they share the gateways' cores there).
    client_connect_us: float  # CPU per socket a load client opens and subscribes
    client_delivery_us: float  # CPU per event frame a load client reads
    # The whole box per socket connected in the full bench (wall time x cores / sockets):
    # gateways, clients, Redis, and the kernel's loopback work no process is charged for.
    box_connect_us: float


UNIT_COSTS = UnitCosts(
    gateway_connect_us=340.0,
    gateway_connect_contended_us=513.0,
    gateway_event_us=360.0,
    gateway_delivery_us=12.5,
    gateway_idle_base=0.0012,
    gateway_idle_per_1000_sockets=0.001,
    gateway_kib_per_socket=7.5,
    gateway_base_mib=65.0,
    gateway_sockets_per_process=19_800,
    ingest_alert_us=88.0,
    processor_alert_us=162.0,
    redis_alert_us=90.0,
    redis_event_us=165.0,
    redis_fanout_us=17.0,
    redis_connect_us=4.0,
    redis_idle_per_gateway=0.0003,
    redis_kib_per_alert=2.0,
    redis_kib_per_stream_entry=1.0,
    redis_core_budget=0.7,
    client_connect_us=1012.0,
    client_delivery_us=6.6,
    box_connect_us=1708.0,
)


@dataclass(frozen=True)
class Load:
    """A deployment's load: sockets held, connects, alerts and how widely each fans out."""

    sockets: int
    alerts_per_second: float
    subscribers_per_event: float  # sockets that receive each event, on average
    channels_per_alert: int = 4  # alerts, severity, service, team
    connects_per_second: float = 0.0
    stored_alerts: int = 0
    channels: int = 0  # distinct channels with a retained stream
    stream_entries_per_channel: int = 10_000
    # Gateway pools the channels are sharded over (sockets routed by team, say): each
    # gateway then takes, and Redis pushes each event to, 1/pools of the gateways.
    pools: int = 1


def deliveries_per_second(load: Load) -> float:
    """Event frames written to sockets per second."""
    return load.alerts_per_second * load.subscribers_per_event


def gateway_cpu(load: Load, gateways: int, costs: UnitCosts = UNIT_COSTS) -> float:
    """Cores `gateways` replicas together need for `load`. Each replica takes every event
    of the channels its sockets use from pub/sub: with sockets spread evenly, all of them."""
    events = load.alerts_per_second * load.channels_per_alert / load.pools
    return (
        gateways * (costs.gateway_idle_base + events * costs.gateway_event_us / 1e6)
        + load.sockets / 1000 * costs.gateway_idle_per_1000_sockets
        + deliveries_per_second(load) * costs.gateway_delivery_us / 1e6
        + load.connects_per_second * costs.gateway_connect_us / 1e6
    )


def shared_box_connect_seconds(sockets: int, cores: int, costs: UnitCosts = UNIT_COSTS) -> float:
    """Wall seconds to connect `sockets` when gateways and clients share `cores` (the bench)."""
    return sockets * costs.box_connect_us / 1e6 / cores


def gateway_memory(sockets: int, replicas: int, costs: UnitCosts = UNIT_COSTS) -> float:
    """Resident bytes of `replicas` gateways holding `sockets` between them."""
    return sockets * costs.gateway_kib_per_socket * 1024 + replicas * costs.gateway_base_mib * 2**20


def redis_cpu(load: Load, gateways: int, costs: UnitCosts = UNIT_COSTS) -> float:
    """Cores Redis needs: alerts applied, their events published and pushed to every gateway
    of their pool (each gateway subscribes to the channels its sockets use, so at scale, to
    all of its pool's)."""
    events = load.alerts_per_second * load.channels_per_alert
    subscribed = gateways / load.pools  # the gateways each event is pushed to
    return (
        gateways * costs.redis_idle_per_gateway
        + (
            load.alerts_per_second * costs.redis_alert_us
            + events * (costs.redis_event_us + subscribed * costs.redis_fanout_us)
            + load.connects_per_second * costs.redis_connect_us
        )
        / 1e6
    )


def redis_memory(load: Load, costs: UnitCosts = UNIT_COSTS) -> float:
    """Bytes of Redis data: stored alerts plus the retained streams."""
    streams = load.channels * load.stream_entries_per_channel * costs.redis_kib_per_stream_entry
    return (load.stored_alerts * costs.redis_kib_per_alert + streams) * 1024


@dataclass(frozen=True)
class Sizing:
    """Replicas and Redis size for a load, at a target CPU utilisation."""

    gateways: int
    ingest: int
    processors: int
    gateway_cores: float
    gateway_gib_per_replica: float
    redis_cores: float
    redis_gib: float
    redis_primaries: int


def size(load: Load, target_utilisation: float = 0.7, costs: UnitCosts = UNIT_COSTS) -> Sizing:
    """Replicas per service and the Redis to give them (at least two of each, for failover)."""
    intake = costs.gateway_idle_base + (
        load.alerts_per_second * load.channels_per_alert / load.pools * costs.gateway_event_us / 1e6
    )
    if intake >= target_utilisation:
        raise ValueError(
            f"each gateway's pub/sub intake alone needs {intake:.2f} cores: "
            "shard the channels over gateway pools (docs/capacity.md)"
        )
    # Each replica adds its own pub/sub intake, so grow the count until it covers itself.
    gateways = max(2, math.ceil(load.sockets / costs.gateway_sockets_per_process))
    while (needed := math.ceil(gateway_cpu(load, gateways, costs) / target_utilisation)) > gateways:
        gateways = needed
    cores = gateway_cpu(load, gateways, costs)
    ingest = max(
        2, math.ceil(load.alerts_per_second * costs.ingest_alert_us / 1e6 / target_utilisation)
    )
    processors = max(
        2, math.ceil(load.alerts_per_second * costs.processor_alert_us / 1e6 / target_utilisation)
    )
    redis_cores = redis_cpu(load, gateways, costs)
    return Sizing(
        gateways=gateways,
        ingest=ingest,
        processors=processors,
        gateway_cores=cores,
        gateway_gib_per_replica=gateway_memory(load.sockets, gateways, costs) / gateways / 2**30,
        redis_cores=redis_cores,
        redis_gib=redis_memory(load, costs) / 2**30,
        redis_primaries=max(1, math.ceil(redis_cores / costs.redis_core_budget)),
    )


# The guide's worked examples (docs/capacity.md prints `example_rows()`; a test compares).
EXAMPLES: dict[str, Load] = {
    "team of 50, 10 dashboards": Load(
        sockets=60,
        alerts_per_second=10,
        subscribers_per_event=60,
        connects_per_second=1,
        stored_alerts=100_000,
        channels=60,
    ),
    "10,000 sockets, 100 alerts/s": Load(
        sockets=10_000,
        alerts_per_second=100,
        subscribers_per_event=1_000,
        connects_per_second=50,
        stored_alerts=1_000_000,
        channels=300,
    ),
    "1,000,000 sockets, 1,000 alerts/s, 8 pools": Load(
        sockets=1_000_000,
        alerts_per_second=1_000,
        subscribers_per_event=10_000,
        connects_per_second=2_000,
        stored_alerts=10_000_000,
        channels=3_000,
        pools=8,
    ),
}


def example_rows() -> list[str]:
    """The worked examples as the guide's table rows."""
    rows = []
    for name, load in EXAMPLES.items():
        sizing = size(load)
        cells = [
            f"example: {name}",
            f"{load.sockets:,}",
            f"{load.alerts_per_second:,g}",
            f"{load.subscribers_per_event:,g}",
            f"{load.connects_per_second:,g}",
            f"{load.stored_alerts:,}",
            f"{load.channels:,}",
            f"{load.pools}",
            f"{sizing.gateways}",
            f"{sizing.ingest}",
            f"{sizing.processors}",
            f"{sizing.redis_cores:.2f}",
            f"{sizing.redis_gib:.2f}",
            f"{sizing.redis_primaries}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


if __name__ == "__main__":
    print("\n".join(example_rows()))
