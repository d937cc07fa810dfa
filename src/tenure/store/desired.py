"""Desired state: where a client wants a resource to end up, and the way there through its kind's graph.

A client sets ``desired_state``; that bumps ``generation``. Once the resource reaches the desired state
(or can no longer get anywhere), ``observed_generation`` catches up with ``generation``. While the two
differ the desire is *pending*: the engine moves a resource that rests short of its desired state one
event along a shortest path, and the kind's own steps take it from there.

The way there is found by :func:`tenure.machine.graph.next_hop`.
"""

from __future__ import annotations

from tenure.store.model import Resource

__all__ = ["DESIRED_EVENT", "DESIRED_FAILED_EVENT", "desire_pending"]

#: The journal event of a write that sets (or clears) the desired state.
DESIRED_EVENT = "@desired"
#: The journal event of the engine giving up on a desired state it cannot reach.
DESIRED_FAILED_EVENT = "@desired-failed"


def desire_pending(resource: Resource) -> bool:
    """Whether ``resource`` has a desired state it is not in and that the engine has not finished with."""
    desired = resource.desired_state
    return desired is not None and desired != resource.state and resource.generation > resource.observed_generation
