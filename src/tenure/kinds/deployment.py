"""The ``deployment`` kind: a deployed service several clients use, torn down after the last one (seed 002).

A client creates a deployment (sharable unless it says otherwise, or the provider's default says
so); the deploy flow reserves capacity, starts the instances and publishes an endpoint, reverting
what it did if a task fails. Other clients register as parties using it (``in_use_by``). When a
client is done it sets the desired state to ``undeployed``: that is accepted at once, releases its
own uses, and the deployment stays ``deployed`` while any other party's use is live. The write that
removes the last use (or finds it expired) fires ``undeploy``, and the undeploy flow takes the
deployment down, in the reverse order. An undeploy that fails reverts (the instances come back and
the endpoint is published again), so the deployment is ``deployed`` again with the error recorded,
rather than half gone. An admin may force the teardown whoever still uses it.

>>> deployment.sharing.teardown, deployment.sharing.torn_down, sorted(deployment.sharing.usable)
('undeploy', 'undeployed', ['deployed', 'deploying'])
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Protocol

import pydantic

from tenure.engine.flows import FlowStep
from tenure.flow import Failure, Flow, Task, TaskContext, linear
from tenure.machine import Event, Kind, Role, Sharing, State
from tenure.store.model import Resource

__all__ = ["DeploymentSpec", "MemoryPlatform", "Platform", "deployment", "deployment_steps"]


class DeploymentSpec(pydantic.BaseModel):
    """What to deploy: a named service from an image, with some replicas."""

    model_config = pydantic.ConfigDict(extra="forbid")

    name: str = pydantic.Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    image: str = pydantic.Field(min_length=1, max_length=255)
    replicas: int = pydantic.Field(default=1, ge=1, le=100)


#: The deployment kind: its states, codes, roles, events and sharing rules.
deployment = Kind(
    "deployment",
    description="A deployed service shared by several clients, torn down after the last one (seed 002).",
    spec_model=DeploymentSpec,
    # What the deploy flow made: a client must not rewrite it, or undeploy would stop the wrong thing.
    step_data=("deployment",),
    initial="deploying",
    states=[
        State(
            "deploying",
            10,
            Role.WORK,
            on_failure="deploy_failed",
            description="deploy flow: reserve capacity, start instances, publish the endpoint",
        ),
        State("deployed", 20, Role.REST, description="running; parties may use it"),
        State("deploy_failed", 30, Role.FINAL, description="the deploy flow failed and reverted what it did"),
        State(
            "undeploying",
            40,
            Role.WORK,
            on_failure="undeploy_failed",
            description="undeploy flow: unpublish, stop the instances, release capacity",
        ),
        State("undeployed", 50, Role.FINAL, description="torn down"),
    ],
    events=[
        Event("deployed", "deploying", "deployed", description="the service runs and its endpoint is published"),
        Event("deploy_failed", "deploying", "deploy_failed", description="a deploy task failed; all reverted"),
        Event("undeploy", "deployed", "undeploying", description="tear down: waits for the last party"),
        Event("undeployed", "undeploying", "undeployed", description="stopped and released"),
        Event(
            "undeploy_failed",
            "undeploying",
            "deployed",
            description="an undeploy task failed; the undeploy reverted, so the service runs again",
        ),
    ],
    sharing=Sharing(teardown="undeploy", torn_down="undeployed", usable=["deploying", "deployed"]),
)


class Platform(Protocol):
    """Where deployments run. Every call is keyed by the deployment's id, so that a re-run is harmless."""

    def reserve(self, deployment_id: str, replicas: int) -> str: ...

    def unreserve(self, deployment_id: str) -> None: ...

    def start(self, deployment_id: str, image: str, replicas: int) -> list[str]: ...

    def stop(self, deployment_id: str) -> None: ...

    def publish(self, deployment_id: str, name: str) -> str: ...

    def unpublish(self, deployment_id: str) -> None: ...


class MemoryPlatform:
    """A platform in memory, for the demo and tests: it keeps what runs where, and can be told to fail."""

    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self.reserved: dict[str, int] = {}
        self.running: dict[str, list[str]] = {}
        self.endpoints: dict[str, str] = {}
        #: Operation names ("start", "stop", ...) that fail while listed here.
        self.failing: set[str] = set()

    def _check(self, operation: str) -> None:
        if operation in self.failing:
            raise RuntimeError(f"platform: {operation} failed")

    def reserve(self, deployment_id: str, replicas: int) -> str:
        with self._lock:
            self._check("reserve")
            used = sum(n for d, n in self.reserved.items() if d != deployment_id)
            if used + replicas > self.capacity:
                raise RuntimeError(f"platform: no capacity for {replicas} replicas ({self.capacity - used} free)")
            self.reserved[deployment_id] = replicas
            return f"reservation-{deployment_id}"

    def unreserve(self, deployment_id: str) -> None:
        with self._lock:
            self._check("unreserve")
            self.reserved.pop(deployment_id, None)

    def start(self, deployment_id: str, image: str, replicas: int) -> list[str]:
        with self._lock:
            self._check("start")
            instances = [f"{deployment_id}-{i}" for i in range(replicas)]
            self.running[deployment_id] = instances
            return instances

    def stop(self, deployment_id: str) -> None:
        with self._lock:
            self._check("stop")
            self.running.pop(deployment_id, None)

    def publish(self, deployment_id: str, name: str) -> str:
        with self._lock:
            self._check("publish")
            endpoint = f"https://{name}.apps.example/"
            self.endpoints[deployment_id] = endpoint
            return endpoint

    def unpublish(self, deployment_id: str) -> None:
        with self._lock:
            self._check("unpublish")
            self.endpoints.pop(deployment_id, None)


# --- the deploy flow ----------------------------------------------------------------------------


class ReserveCapacity(Task):
    provides = ("reservation",)

    def __init__(self, platform: Platform) -> None:
        super().__init__("reserve_capacity")
        self.platform = platform

    def execute(self, resource_id: str, replicas: int) -> str:
        return self.platform.reserve(resource_id, replicas)

    def revert(self, *args: Any, result: Any, failure: Failure | None, **inputs: Any) -> None:
        self.platform.unreserve(inputs["resource_id"])


class StartInstances(Task):
    provides = ("instances",)

    def __init__(self, platform: Platform) -> None:
        super().__init__("start_instances")
        self.platform = platform

    def execute(self, resource_id: str, image: str, replicas: int) -> list[str]:
        return self.platform.start(resource_id, image, replicas)

    def revert(self, *args: Any, result: Any, failure: Failure | None, **inputs: Any) -> None:
        self.platform.stop(inputs["resource_id"])


class PublishEndpoint(Task):
    provides = ("deployment",)

    def __init__(self, platform: Platform) -> None:
        super().__init__("publish_endpoint")
        self.platform = platform

    def execute(self, resource_id: str, name: str, instances: list[str], reservation: str) -> dict[str, Any]:
        endpoint = self.platform.publish(resource_id, name)
        return {"endpoint": endpoint, "instances": instances, "reservation": reservation}

    def revert(self, *args: Any, result: Any, failure: Failure | None, **inputs: Any) -> None:
        self.platform.unpublish(inputs["resource_id"])


# --- the undeploy flow: the deploy flow's steps undone, each redone if a later one fails --------------


class Unpublish(Task):
    def __init__(self, platform: Platform) -> None:
        super().__init__("unpublish_endpoint")
        self.platform = platform

    def execute(self, resource_id: str, name: str) -> None:
        self.platform.unpublish(resource_id)

    def revert(self, *args: Any, result: Any, failure: Failure | None, **inputs: Any) -> None:
        self.platform.publish(inputs["resource_id"], inputs["name"])


class StopInstances(Task):
    def __init__(self, platform: Platform) -> None:
        super().__init__("stop_instances")
        self.platform = platform

    def execute(self, resource_id: str, image: str, replicas: int) -> None:
        self.platform.stop(resource_id)

    def revert(self, *args: Any, result: Any, failure: Failure | None, **inputs: Any) -> None:
        self.platform.start(inputs["resource_id"], inputs["image"], inputs["replicas"])


class ReleaseCapacity(Task):
    def __init__(self, platform: Platform) -> None:
        super().__init__("release_capacity")
        self.platform = platform

    def execute(self, resource_id: str, context: TaskContext) -> None:
        self.platform.unreserve(resource_id)


def _inputs(resource: Resource) -> Mapping[str, Any]:
    spec = resource.spec
    return {"resource_id": resource.id, "name": spec["name"], "image": spec["image"], "replicas": spec["replicas"]}


def deploy_flow(platform: Platform) -> Flow:
    """Reserve capacity, start the instances, publish the endpoint; each undone if a later one fails."""
    return linear("deployment-deploy", ReserveCapacity(platform), StartInstances(platform), PublishEndpoint(platform))


def undeploy_flow(platform: Platform) -> Flow:
    """Unpublish, stop, release: if one fails, what was already undone is redone (the service runs again)."""
    return linear("deployment-undeploy", Unpublish(platform), StopInstances(platform), ReleaseCapacity(platform))


def deployment_steps(platform: Platform) -> dict[str, FlowStep]:
    """The steps of the deployment kind's work states, by state name."""
    return {
        "deploying": FlowStep(
            deploy_flow(platform), "deployed", "deploy_failed", inputs=_inputs, outputs=("deployment",)
        ),
        "undeploying": FlowStep(undeploy_flow(platform), "undeployed", "undeploy_failed", inputs=_inputs, outputs=()),
    }
