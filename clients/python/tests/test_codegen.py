"""(e) python -m scenario_hub.codegen: models that accept what the server accepts."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pydantic
from conftest import HubServer, new_run

from scenario_hub import EventInput, Hub, PayloadSchemaViolation

MOVE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["actor", "to"],
    "additionalProperties": False,
    "properties": {
        "actor": {"type": "string", "minLength": 1},
        "to": {"$ref": "#/$defs/position"},
        "path": {"type": "array", "items": {"$ref": "#/$defs/position"}},
        "mood": {"enum": ["calm", "angry"]},
        "urgent": {"type": "boolean"},
    },
    "$defs": {
        "position": {
            "type": "object",
            "required": ["x", "y"],
            "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
        }
    },
}

# Payloads per event type; the server's verdict and the model's must agree.
CANDIDATES: dict[str, list[Any]] = {
    "prompt": [
        {"text": "hello"},
        {"text": "hello", "fail": False},
        {"text": "hello", "extra": [1, 2]},  # additional properties are allowed
        {},
        {"text": 5},
        {"text": "x", "fail": "no"},
        {"text": None},
    ],
    "reply": [
        {"repliedTo": 3},
        {"repliedTo": 3, "text": "ok"},
        {"repliedTo": "3"},
        {"repliedTo": 3.5},
        {"text": "no sequence"},
    ],
    "actor.move": [
        {"actor": "guard", "to": {"x": 1, "y": 2}},
        {"actor": "guard", "to": {"x": 1, "y": 2}, "path": [{"x": 0, "y": 0}], "mood": "calm"},
        {"actor": "guard", "to": {"x": 1, "y": 2}, "urgent": True},
        {"actor": "", "to": {"x": 1, "y": 2}},
        {"actor": "guard", "to": {"x": 1}},
        {"actor": "guard", "to": {"x": 1, "y": 2}, "mood": "bored"},
        {"actor": "guard", "to": {"x": 1, "y": 2}, "speed": 3},  # additionalProperties false
        {"actor": "guard", "to": {"x": 1, "y": 2}, "path": [{"x": "a", "y": 0}]},
        {"actor": "guard", "to": {"x": 1, "y": 2}, "urgent": 1},
    ],
    "metric_recorded": [
        {"metric": "tension", "value": 0.5},
        {"metric": "tension", "value": 1, "labels": {"scene": "gate"}},
        {"metric": "", "value": 0.5},
        {"metric": "tension"},
        {"metric": "tension", "value": "high"},
    ],
}


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("generated_payloads", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_codegen_models_match_the_server(
    hub_server: HubServer, hub: Hub, tmp_path: Path
) -> None:
    run_id = await new_run(
        hub,
        **{"actor.move": {"payload_schema": MOVE_SCHEMA}, "free_form": {}},
    )
    out = tmp_path / "gen" / "payloads.py"
    done = subprocess.run(
        [sys.executable, "-m", "scenario_hub.codegen", hub_server.url, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    module = load(out)

    models: dict[str, type[pydantic.BaseModel]] = module.PAYLOAD_MODELS
    # One model per event type with a schema (built-in ones included), none for free_form.
    assert {"prompt", "reply", "actor.move", "metric_recorded", "run_status_changed"} <= set(models)
    assert "free_form" not in models
    assert models["prompt"].__name__ == "PromptPayload"
    assert models["actor.move"].__name__ == "ActorMovePayload"

    for event_type, payloads in CANDIDATES.items():
        model = models[event_type]
        for payload in payloads:
            try:
                published = await hub.publish_event(
                    EventInput(run_id=run_id, event_type=event_type, payload=payload)
                )
            except PayloadSchemaViolation:
                server_ok = False
            else:
                server_ok = True
                assert published.payload == payload
            try:
                parsed = model.model_validate(payload)
            except pydantic.ValidationError:
                model_ok = False
            else:
                model_ok = True
                # Back to the wire, by alias: the same payload.
                assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == payload
            assert server_ok == model_ok, (
                f"{event_type} {payload}: server {'accepts' if server_ok else 'rejects'},"
                f" model {'accepts' if model_ok else 'rejects'}"
            )

    # Real payloads, as the server stores and delivers them, validate.
    for event in await hub.all_events(run_id):
        if event.event_type in models:
            event.payload_as(models[event.event_type])

    # A model instance is sent by its aliases and accepted.
    reply = models["reply"].model_validate({"replied_to": 7, "text": "ok"})
    sent = await hub.publish_event(EventInput(run_id=run_id, event_type="reply", payload=reply))
    assert sent.payload == {"repliedTo": 7, "text": "ok"}
