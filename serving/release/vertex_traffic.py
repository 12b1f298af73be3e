"""Canary releases on a Vertex AI endpoint: the `fmnist release` operations on its traffic split.

An endpoint serving a release has one or two deployed models: stable, the one with the larger
share of the traffic, and canary, the other one (a tie goes to the older as stable). Deploying a
model is the Vertex Pusher's (or `gcloud ai endpoints deploy-model`'s) job; these operations only
move traffic and undeploy: start_canary gives an already deployed model its share, promote moves
all traffic to the canary and then undeploys the old stable, rollback moves it all back to
stable and then undeploys the canary. Traffic moves before anything is undeployed, so requests
always have a deployed model to go to. google-cloud-aiplatform is imported only when an
endpoint is opened; the operations use nothing of it but the `aiplatform.Endpoint` object.

With a `history_file`, promote, rollback and record append to it as FileRelease does to its
release_history.jsonl (serving.release.labels.History), so `fmnist release auto` on an endpoint leaves the
same record of its decisions and their evidence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from serving.release.labels import Gate, History, ReleaseError, ReleaseState, Version

DEFAULT_CANARY_TRAFFIC = 10  # percent


def open_endpoint(endpoint: str | None = None, project: str | None = None, region: str | None = None,
                  display_name: str | None = None) -> Any:
    """The aiplatform.Endpoint named by its resource name (projects/P/locations/R/endpoints/ID, or
    an ID with project and region), else the one endpoint in project/region with `display_name`.
    Raises ReleaseError (one line) when that does not name exactly one endpoint."""
    from google.cloud import aiplatform

    if endpoint:
        if display_name:
            raise ReleaseError("give the endpoint by --vertex-endpoint or by --endpoint-name, not both")
        return aiplatform.Endpoint(endpoint, project=project, location=region)
    if not (project and region and display_name):
        raise ReleaseError("a Vertex endpoint needs --vertex-endpoint projects/P/locations/R/endpoints/ID, "
                           "or --project, --region and --endpoint-name")
    found = aiplatform.Endpoint.list(filter=f'display_name="{display_name}"', project=project, location=region)
    if len(found) != 1:
        raise ReleaseError(f"{len(found)} endpoints named {display_name!r} in {project}/{region}: "
                           "pass --vertex-endpoint with the resource name")
    return found[0]


class VertexRelease:
    """Releases by traffic split on `endpoint` (an aiplatform.Endpoint, or anything with its
    resource_name, display_name, traffic_split, list_models(), update(traffic_split=...) and
    undeploy(deployed_model_id=...)). Versions are deployed model IDs. start_canary gives the
    canary `canary_traffic` percent. Refusals raise ReleaseError (one line) and change nothing.
    `history_file`: the JSONL history promote/rollback/record append to (None: none kept)."""

    def __init__(self, endpoint: Any, canary_traffic: int = DEFAULT_CANARY_TRAFFIC, history_file: str | None = None):
        if not 0 < canary_traffic < 100:
            raise ReleaseError(f"a canary's traffic share is a percent within 1..99, got {canary_traffic}")
        self.endpoint = endpoint
        self.canary_traffic = canary_traffic
        self.history_file = None if history_file is None else str(history_file)
        self._history = None if history_file is None else History(str(history_file))

    def _tracks(self, strict: bool = True) -> ReleaseState:
        deployed = self.endpoint.list_models()
        traffic = {key: int(share) for key, share in self.endpoint.traffic_split.items()}

        def created(model) -> float:
            return model.create_time.timestamp() if model.create_time else 0.0

        # Largest share first; on a tie the older one is stable.
        ranked = sorted(deployed, key=lambda m: (-traffic.get(m.id, 0), created(m)))
        serving = tuple(f"{m.id} ({m.display_name}, {m.model}): {traffic.get(m.id, 0)} %" for m in ranked)
        where, name = self.endpoint.resource_name, self.endpoint.display_name
        if len(ranked) > 2:
            if strict:
                raise ReleaseError(f"{where} has {len(ranked)} deployed models ({', '.join(m.id for m in ranked)}): "
                                   "a release is one stable and one canary; undeploy the others first")
            return ReleaseState(where, name, None, None, serving,
                                (f"{len(ranked)} deployed models: not a stable/canary release",))
        stable = ranked[0].id if ranked else None
        canary = ranked[1].id if len(ranked) == 2 else None
        return ReleaseState(where, name, stable, canary, serving)

    def status(self) -> ReleaseState:
        """The deployed models, their shares, and which is stable and which the canary."""
        return self._tracks(strict=False)

    def start_canary(self, version: str) -> ReleaseState:
        """Gives deployed model `version` canary_traffic percent, stable the rest; when it is the
        only deployed model, all of the traffic (it is stable directly)."""
        state = self._tracks()
        deployed = {state.stable, state.canary} - {None}
        if version not in deployed:
            raise ReleaseError(f"{state.where} has no deployed model {version} (deployed: "
                               f"{', '.join(sorted(deployed)) or 'none'}): deploy it first, with 0 % traffic")
        if version == state.stable and state.canary is not None:
            raise ReleaseError(f"deployed model {version} is stable on {state.where}; the canary is {state.canary}")
        if state.canary is None:
            self.endpoint.update(traffic_split={version: 100})
            return self._with_note(f"{version} is the only deployed model: stable directly, with all traffic")
        self.endpoint.update(traffic_split={state.stable: 100 - self.canary_traffic, version: self.canary_traffic})
        return self._with_note(f"canary {version} gets {self.canary_traffic} % of the traffic, "
                               f"stable {state.stable} {100 - self.canary_traffic} %")

    def promote(self, gates: Sequence[Gate] = (), actor: str = "fmnist release promote",
                expect_canary: Version | None = None, evidence: Mapping[str, Any] | None = None) -> ReleaseState:
        """All traffic to the canary, then the old stable undeployed. Gates run first; a refusal
        raises GateRefusedError and nothing changes. `expect_canary`: refuse unless that deployed
        model is still the canary; `evidence` goes into the history."""
        state = self._tracks()
        if state.canary is None:
            raise ReleaseError(f"{state.where} has no canary to promote (stable: {state.stable or 'none'})")
        self._check_expected(state, expect_canary)
        measured = [gate(state) for gate in gates]
        self.endpoint.update(traffic_split={state.canary: 100})
        self.endpoint.undeploy(deployed_model_id=state.stable)
        self._record("promoted", state.model, state.canary, None, actor,
                     {"previous_stable": state.stable, **({"gates": measured} if measured else {}), **(evidence or {})})
        return self._with_note(*measured, f"{state.canary} is stable with all traffic; {state.stable} undeployed")

    def rollback(self, actor: str = "fmnist release rollback", expect_canary: Version | None = None,
                 evidence: Mapping[str, Any] | None = None) -> ReleaseState:
        """All traffic back to stable, then the canary undeployed (`expect_canary`, `evidence`: as
        for promote)."""
        state = self._tracks()
        if state.canary is None:
            raise ReleaseError(f"{state.where} has no canary to roll back (stable: {state.stable or 'none'})")
        self._check_expected(state, expect_canary)
        self.endpoint.update(traffic_split={state.stable: 100})
        self.endpoint.undeploy(deployed_model_id=state.canary)
        self._record("rolled back", state.model, state.stable, state.canary, actor, evidence)
        return self._with_note(f"stable {state.stable} has all traffic again; canary {state.canary} undeployed")

    def record(self, action: str, actor: str, evidence: Mapping[str, Any] | None = None) -> dict | None:
        """Appends a decision that moves no traffic (an inconclusive analysis) to the history, with
        the release as it stands; the entry (None without a history file)."""
        state = self.status()
        return self._record(action, state.model, state.stable, state.canary, actor, evidence)

    def history(self) -> list[dict]:
        """The history's entries, oldest first ([] without a history file)."""
        return [] if self._history is None else self._history.entries()

    def _record(self, action: str, model: str, stable: Version | None, canary: Version | None, actor: str,
                evidence: Mapping[str, Any] | None) -> dict | None:
        return None if self._history is None else self._history.append(action, model, stable, canary, actor,
                                                                         evidence)

    @staticmethod
    def _check_expected(state: ReleaseState, expected: Version | None) -> None:
        if expected is not None and str(state.canary) != str(expected):
            raise ReleaseError(f"the canary on {state.where} is now deployed model {state.canary}, not {expected}: "
                               "it changed while it was measured, nothing done")

    def _with_note(self, *notes: str) -> ReleaseState:
        return dataclasses.replace(self._tracks(strict=False), notes=notes)
