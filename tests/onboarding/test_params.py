"""The list params of the trigger form: a multi-select of the allowed values, and nothing else."""

from __future__ import annotations

import pytest
from airflow.sdk.definitions import param
from airflow.sdk.definitions.param import ParamsDict

from airflow_sfox.onboarding.model import CHANNELS, CHANNELS_BY_ACCOUNT_TYPE, REDRIVE_CHOICES, STATE_LABELS
from airflow_sfox.onboarding.params import event_params, onboarding_params

#: param -> the values the form offers, as the model names them.
LIST_PARAMS = {
    "channels": [str(channel) for channel in CHANNELS],
    "redrive": list(REDRIVE_CHOICES),
}


@pytest.mark.parametrize(("name", "values"), LIST_PARAMS.items())
def test_list_param_is_a_multi_select_of_the_model_values(name, values):
    schema = onboarding_params()[name].schema
    # Airflow's trigger form renders an array with "examples" as a multi-select (3.1 and later).
    assert "array" in ([schema["type"]] if isinstance(schema["type"], str) else schema["type"])
    assert schema["examples"] == values
    assert schema["items"] == {"type": "string", "enum": values}
    assert list(schema["values_display"]) == values
    assert all(schema["values_display"].values())


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("failed", STATE_LABELS["failed"]),
        ("gave_up", "gave up"),
        ("not_registered", "not registered"),
        ("uncertain", STATE_LABELS["uncertain"]),
    ],
)
def test_redrive_choices_are_labelled(value, label):
    assert onboarding_params()["redrive"].schema["values_display"][value] == label


def test_channel_labels_say_who_verifies_them_and_after_what():
    shown = onboarding_params()["channels"].schema["values_display"]
    for channel in CHANNELS:
        kinds = [str(kind) for kind, order in CHANNELS_BY_ACCOUNT_TYPE.items() if channel in order]
        assert shown[str(channel)].startswith(f"{channel}: {', '.join(kinds)}"), shown
    assert shown["sms"] == "sms: individual, after email"
    assert shown["email"] == "email: individual, corporation"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("redrive", ["failed", "sent"], "'sent' is not one of"),
        ("redrive", ["queued"], "'queued' is not one of"),
        ("redrive", ["failed", "failed"], "non-unique elements"),
        ("channels", ["fax"], "'fax' is not one of"),
        ("channels", [], "should be non-empty"),
        ("channels", None, "None is not of type 'array'"),
    ],
)
def test_other_values_are_refused_naming_the_param(name, value, message):
    params = ParamsDict(onboarding_params())
    # The error Airflow's params raise (its module moved between 3.1 and 3.3).
    with pytest.raises(param.ParamValidationError) as refused:
        params[name] = value
    assert str(refused.value).startswith(f"Invalid input for param {name}: ")
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [("redrive", None), ("redrive", []), ("redrive", list(REDRIVE_CHOICES)), ("channels", ["email"])],
)
def test_allowed_values_pass(name, value):
    params = ParamsDict(onboarding_params())
    params[name] = value
    assert params[name] == value


def test_the_event_dag_has_no_list_of_choices():
    assert not {"channels", "redrive"} & set(event_params())
