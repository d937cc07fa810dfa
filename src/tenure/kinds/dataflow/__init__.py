"""The ``dataflow`` kind: a data plane's side of one transfer (seed 001), with Eclipse EDC's state codes.

A data plane (a ``tenure serve`` with a ``[dataplane]`` section) runs one dataflow per transfer; its
id is the transfer id. The control plane's signals (``prepare``, ``start``, ``suspend``,
``terminate``; see ``docs/signaling.md`` and :mod:`tenure.service.signaling`) create and move it.
Each signal either settles at once (the answer says ``async: false``) or starts an operation the
engine carries out (``async: true``): provisioning for prepare and start when the flow has
resources to provision, deprovisioning for suspend and terminate when it holds provisioned ones.
When the operation ends, a ``*_notifying`` state posts the outcome to the control plane's callback.

::

    received ──prepare──▶ received                      (nothing to provision)
    received ──provision─▶ provisioning ⇄ provision_requested ──provisioned──▶ provision_notifying
    provision_notifying ──notified_provisioned──▶ provisioned   (prepare)
    provision_notifying ──notified_started──────▶ started       (start)
    provisioning / provision_requested ──provision_failed──▶ provision_failed ──notified_failed──▶ failed
    received / provisioned / suspended ──start──▶ started        (everything it needs is provisioned)
    started ──suspend──▶ suspended   |   … ──terminate──▶ terminated   (nothing provisioned)
    started / … ──deprovision──▶ deprovisioning ⇄ deprovision_requested ──deprovisioned──▶ deprovision_notifying
    deprovision_notifying ──notified_suspended──▶ suspended | ──notified_deprovisioned──▶ deprovisioned
                           ──notified_deprovision_failed──▶ deprovision_failed
    failed ──provision──▶ provisioning   |   deprovision_failed ──deprovision──▶ deprovisioning   (run again)

Every wait state's deadline asks the provisioners again (a provisioner that answers pending and
never calls back, as one whose process died, is asked again with a fresh token). A repeated signal
with a new callback stores it (``resignal``) and, when the operation it started has ended well
already, posts the outcome again with it (``renotify``): a control plane re-asks after its own
deadline because it did not get the first callback. When the operation failed (``failed``,
``deprovision_failed``), the repeat runs it again (``provision`` / ``deprovision`` from there): the
control plane's declared retry after a failure callback. While a flow is telling how an operation
ended (``provision_notifying``, ``provision_failed``, ``deprovision_notifying``), the signaling API
answers a signal that must wait for the rest state ``503`` with a ``Retry-After``.

Each provisioning and each deprovisioning is an operation of its own, marked with the flow's version
its signal wrote (``op.at``): the provisioners are asked under idempotency keys that name it
(:func:`operation_marker`), the same across the operation's retries and deadline re-asks.

The kind object is a :class:`DataflowKind`: it carries what the signaling API (which may not import
a kind) decides by, so that the groups of states and what a flow holds are declared here only.

What the flow keeps in its data, all of it written only by the engine or the signaling API
(``step_data``, refused to clients):

* ``provision`` / ``deprovision``: per-definition answers of the provisioners (as in ``transfer``);
* ``provisioned``: the ids of the definitions the flow holds now (touched by provisioning and not
  deprovisioned since), written when an operation ends;
* ``addresses``: ``{"source", "destination"}`` as they are now (a provisioner's ``done`` data may
  carry a changed ``source`` or ``destination``);
* ``failure``: why the last operation failed (None after one that did not);
* ``notification``: how the last callback went (``delivered``, ``refused``, ``undeliverable``,
  ``skipped``, with the HTTP status and the error, tokens blanked out);
* ``signals``: the first answer to each signal (repeats answer the same), ``op``: the signal the
  flow acts on now (``signal``, ``async``, ``everything`` when a terminate cut a provisioning short,
  ``at``: the operation's marker, the version its signal wrote),
  ``callback``: the newest callback the control plane gave for it (``url``, ``resourceId``,
  ``token``, ``key``).
"""

from __future__ import annotations

from tenure.kinds.dataflow.kind import (
    DEFAULT_REQUEST_DEADLINE,
    ENGINE_EVENTS,
    SIGNAL_EVENTS,
    SIGNALS,
    STEP_DATA,
    TRANSFER_ID_PATTERN,
    DataflowKind,
    DataflowSpec,
    addresses,
    dataflow,
    dataflow_for,
    dataflow_kind,
    holding,
    operation_marker,
    resource_ids,
)
from tenure.kinds.dataflow.provisioners import CallbackInbox, MemoryAsyncProvisioner
from tenure.kinds.dataflow.steps import dataflow_steps

__all__ = [
    "DEFAULT_REQUEST_DEADLINE",
    "ENGINE_EVENTS",
    "SIGNALS",
    "SIGNAL_EVENTS",
    "STEP_DATA",
    "TRANSFER_ID_PATTERN",
    "CallbackInbox",
    "DataflowKind",
    "DataflowSpec",
    "MemoryAsyncProvisioner",
    "addresses",
    "dataflow",
    "dataflow_for",
    "dataflow_kind",
    "dataflow_steps",
    "holding",
    "operation_marker",
    "resource_ids",
]
