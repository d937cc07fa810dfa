"""Built-in example kinds, and loading user kinds by import path."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from tenure.engine.flows import flow_step
from tenure.engine.planes import Signaling
from tenure.engine.provision import MemoryProvisioner
from tenure.engine.signaling import dataplanes
from tenure.engine.steps import Steps
from tenure.errors import InvalidArgument, ModuleNotImportable, NoKindFound, QuotaNotFound
from tenure.kinds.dataflow import CallbackInbox, MemoryAsyncProvisioner, dataflow_for, dataflow_steps
from tenure.kinds.deployment import MemoryPlatform, deployment, deployment_steps
from tenure.kinds.image import image
from tenure.kinds.transfer import transfer, transfer_steps
from tenure.kinds.transfer_v2 import transfer_v2_for, transfer_v2_steps
from tenure.kinds.volume import (
    VOLUME_TABLES,
    Host,
    MemoryNotifier,
    MemoryVolumeDriver,
    ReservationView,
    StoreQuotaLedger,
    volume,
    volume_steps,
)
from tenure.machine import Kind
from tenure.store.protocol import TableStore
from tenure.store.tables import OwnedTables

__all__ = ["builtin_kinds", "builtin_steps", "builtin_tables", "load_kinds", "load_steps"]


def builtin_kinds(signaling: Signaling | None = None) -> tuple[Kind, ...]:
    """The example kinds that ship with tenure (the dataflow's request deadline is ``signaling``'s).

    A control plane with data planes (``signaling.dataplanes``) also loads ``transfer`` version 2,
    which hands provisioning to them: new transfers are made under it, while those made under
    version 1 finish there. Without data planes, transfers stay on version 1 (the control plane
    provisions them itself).
    """
    kinds: tuple[Kind, ...] = (dataflow_for(signaling), deployment, image, transfer, volume)
    if signaling is not None and signaling.dataplanes:
        kinds += (transfer_v2_for(signaling),)
    return kinds


def builtin_tables() -> tuple[OwnedTables, ...]:
    """The tables the example kinds own in the store's database: open stores with them, and migrate."""
    return (VOLUME_TABLES,)


def builtin_steps(store: TableStore | None = None, signaling: Signaling | None = None) -> Steps:
    """The engine steps of the example kinds, with in-memory plug-ins (for the demo and tests).

    Volumes keep their quota ledger in ``store`` (opened with :func:`builtin_tables`); without it only
    transfers, dataflows and deployments get steps. Every project gets a 1000 GB quota the first time a volume of it
    is requested. Dataflows call back ``signaling``'s control plane; their ``memory-async`` provisioner answers
    through ``store``.
    """
    steps = transfer_steps()
    provisioners: dict[str, object] = {"memory": MemoryProvisioner()}
    if isinstance(store, CallbackInbox):
        provisioners["memory-async"] = MemoryAsyncProvisioner(store)
    controlplane = signaling.controlplane if signaling is not None else None
    steps = steps | dataflow_steps(provisioners, controlplane, kind=dataflow_for(signaling))
    if signaling is not None and signaling.dataplanes:
        if signaling.callback_url is None:
            raise InvalidArgument("signaling.callback_url", "a control plane needs the URL of its own callbacks", None)
        planes = dataplanes(signaling)
        steps = steps | transfer_v2_steps(planes, callback_url=signaling.callback_url, kind=transfer_v2_for(signaling))
    for state, step in deployment_steps(MemoryPlatform()).items():
        steps.add(deployment, state, flow_step(step))
    if store is not None:
        flows = volume_steps(
            _DefaultQuota(StoreQuotaLedger(store)),
            driver=MemoryVolumeDriver(),
            notifier=MemoryNotifier(),
            hosts=[Host("host-a", 2000, "nova"), Host("host-b", 1000, "nova")],
            default_availability_zone="nova",
        )
        for state, step in flows.items():
            steps.add(volume, state, flow_step(step))
    return steps


class _DefaultQuota:
    """A ledger that gives a project a default quota the first time it reserves (for the demo kinds)."""

    def __init__(self, ledger: StoreQuotaLedger, default_gb: int = 1000) -> None:
        self._ledger = ledger
        self._default = default_gb

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    def reserve(self, reservation_id: str, project: str, resource: str, amount: int) -> ReservationView:
        try:
            return self._ledger.reserve(reservation_id, project, resource, amount)
        except QuotaNotFound:
            self._ledger.set_quota(project, resource, self._default)
            return self._ledger.reserve(reservation_id, project, resource, amount)


def load_kinds(paths: Iterable[str]) -> tuple[Kind, ...]:
    """Import each module path and collect the :class:`Kind` objects it defines at top level.

    ``"mypkg.kinds"`` loads every kind in that module; ``"mypkg.kinds:volume"`` loads one.
    """
    found: list[Kind] = []
    for path in paths:
        module_name, _, attr = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ModuleNotImportable(module_name, str(exc), what="kinds") from None
        if attr:
            obj = getattr(module, attr, None)
            if not isinstance(obj, Kind):
                raise NoKindFound(module_name, attr)
            found.append(obj)
            continue
        kinds = [v for v in vars(module).values() if isinstance(v, Kind)]
        kinds = list({id(k): k for k in kinds}.values())
        if not kinds:
            raise NoKindFound(module_name)
        found.extend(kinds)
    return tuple(found)


def load_steps(paths: Iterable[str]) -> Steps:
    """The :class:`Steps` objects each module path defines at top level, combined."""
    combined = Steps()
    for path in paths:
        module_name = path.partition(":")[0]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ModuleNotImportable(module_name, str(exc), what="steps") from None
        for value in vars(module).values():
            if isinstance(value, Steps):
                combined = combined | value
    return combined
