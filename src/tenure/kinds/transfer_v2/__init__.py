"""``transfer`` version 2: the transfer process of seed 001, with provisioning moved to the data plane.

The control plane no longer provisions anything. It signals the transfer's data plane (``prepare``,
``start``, ``suspend``, ``terminate``; the wire contract is ``docs/signaling.md``) and learns at once
whether the data plane started an asynchronous (de)provisioning. If it did not, the transfer goes on
along the standard path; if it did, the transfer waits in a ``*_requested`` state for the data
plane's callback (key ``dataplane``), up to a deadline that asks again. Seed 001's table:

=========  ========  =========  =========================  ======================
from       type      signal     async                      not async
=========  ========  =========  =========================  ======================
initial    consumer  prepare    ``preparation_requested``  ``requesting``
initial    provider  start      ``startup_requested``      ``starting``
started    either    suspend    ``suspension_requested``   ``suspending``
started    either    terminate  ``termination_requested``  ``terminating``
=========  ========  =========  =========================  ======================

A consumer has ``requesting`` and ``requested`` (it asks the provider, then rests until the
provider's start message, the client event ``start``); a provider starts straight from ``initial``
(guards on ``spec.type`` keep each to its own edges, as in EDC's ``TransferProcess``).

Each transfer is served by one data plane (``spec.dataplane``, one of the configured ones), for its
whole life: the plane that prepared a flow is the plane that starts, suspends and terminates it, and
only that plane's callbacks are accepted for it (``Kind.answered_by``).

**Who moves it.** Clients ask with ``desiredState`` (``suspended``, ``started`` to resume,
``terminated``, ``completed``); the engine does the signaling. ``started`` is a rest state whose step
runs only while a desired state asks to leave it: it signals ``suspend`` or ``terminate`` per the
table, or fires ``complete`` (no signal). The only events a client fires itself are the
counter-party's messages: ``start`` (the provider's start message, to a consumer in ``requested``)
and ``complete``. Every other event is the engine's (``Kind.engine_events``).

**Retries.** A work state that signals asks the data plane again when the answer was an error worth
retrying (no connection, a timeout, 408, 425, 429, 5xx), with the state's backoff. A callback that says ``failed`` or
``retry``, and a wait whose deadline passes, go back to the state that signals again
(``preparation_requested`` to ``initial``, the others to ``starting``, ``suspending`` and
``terminating``), which asks again with a fresh callback token. The round trips per signal are
counted (``data.signals[signal].asks``) and bounded: past the bound the state fails for good.

**Endings.** ``completed`` and ``terminated`` are final. A failure anywhere leads to ``terminating``,
which signals ``terminate`` if a flow may exist on the data plane, and ends in ``terminated`` with
the failure kept as the resource's error and in ``data.failure``. ``data.ended`` says how the
lifecycle ended, for a client to filter on: ``completed``, ``terminated`` (asked for) or ``failed``.

**Data the steps own** (``Kind.step_data``; no client writes them): ``signals`` (per signal: round
trips, the last answer, whether the data plane confirmed it), ``callback`` (the last wait's answer),
``source`` and ``destination`` (the addresses as the data plane last reported them: a provisioner may
change them, and later signals send them as changed), ``dataFlowId``, ``ended`` and ``failure``.

State codes are EDC's ``TransferProcessStates`` where EDC has the state (``STARTUP_REQUESTED`` 570
among them). The seed's three new states get codes of their own: ``preparation_requested`` 150
(EDC files its preparation under 250, which version 1 uses for ``provisioning_requested``),
``suspension_requested`` 660 and ``termination_requested`` 830. EDC's ``SUSPENDING_REQUESTED`` (675)
and ``TERMINATING_REQUESTED`` (840) are other states: the counter-party asked to suspend or
terminate. Waiting for the data plane to deprovision is a different thing, and a code names one state
for good, so those two codes stay free for them.
"""

from __future__ import annotations

from tenure.kinds.transfer_v2.kind import (
    CALLBACK,
    CLIENT_EVENTS,
    KEY,
    STEP_DATA,
    TransferV2Spec,
    transfer_v2_for,
    transfer_v2_kind,
)
from tenure.kinds.transfer_v2.steps import transfer_v2_steps

__all__ = [
    "CALLBACK",
    "CLIENT_EVENTS",
    "KEY",
    "STEP_DATA",
    "TransferV2Spec",
    "transfer_v2_for",
    "transfer_v2_kind",
    "transfer_v2_steps",
]
