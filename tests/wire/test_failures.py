from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patient_sidekiq.errors import InvalidResultError, PatientHttpError, WireFormatError
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.wire.failures import (
    ClientError,
    HttpError,
    RecursiveRedirectError,
    RedirectError,
    RequestError,
    ServerError,
    TooManyRedirectsError,
    load_failure,
)
from patient_sidekiq.wire.response import Response

CLASSES = {
    "PatientHttp::ClientError": ClientError,
    "PatientHttp::ServerError": ServerError,
    "PatientHttp::HttpError": HttpError,
    "PatientHttp::TooManyRedirectsError": TooManyRedirectsError,
    "PatientHttp::RecursiveRedirectError": RecursiveRedirectError,
}


def error_vectors(golden: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(golden["error_as_json"])


def test_every_error_vector_loads_and_dumps_to_rubys_text(golden: dict[str, Any]) -> None:
    for name, vector in error_vectors(golden).items():
        text = rubyjson.dumps(vector["as_json"])
        failure = load_failure(rubyjson.loads(text))
        assert rubyjson.dumps(failure.to_wire()) == text, name
        if "load_class" in vector:
            assert type(failure) is CLASSES[vector["load_class"]], name
        else:
            assert type(failure) is RequestError, name
        if "message" in vector:
            assert str(failure) == vector["message"], name
            assert failure.message == vector["message"], name
        if "error_type" in vector:
            assert failure.error_type == vector["error_type"], name


def test_request_errors_build_from_python_arguments(golden: dict[str, Any]) -> None:
    vector = golden["error_as_json"]["RequestError_connection_ECONNREFUSED"]
    built = RequestError(
        class_name="Errno::ECONNREFUSED",
        message="Connection refused - connect(2) for 127.0.0.1:1",
        backtrace=["app/jobs/example_job.rb:235:in `block in <main>'"],
        error_type="connection",
        duration=0.5,
        request_id="00000000-0000-4000-8000-000000000001",
        url="https://api.example.com/v1/items",
        http_method="post",
        callback_args={"k": "v"},
    )
    assert rubyjson.dumps(built.to_wire()) == rubyjson.dumps(vector["as_json"])
    assert built.callback_args["k"] == "v"
    assert isinstance(built, PatientHttpError)


def test_http_errors_pick_the_class_by_status(golden: dict[str, Any]) -> None:
    for name in ("HttpError_404", "HttpError_500", "HttpError_302"):
        vector = golden["error_as_json"][name]
        response = Response.from_wire(vector["as_json"]["response"])
        failure = HttpError.for_response(response)
        assert type(failure) is CLASSES[vector["class"]]
        assert failure.ruby_class == vector["class"]
        assert str(failure) == vector["message"]
        assert failure.status == response.status
        assert failure.callback_args["user_id"] == 42
        assert rubyjson.dumps(failure.to_wire()) == rubyjson.dumps(vector["as_json"])


def test_redirect_errors_build_with_rubys_messages(golden: dict[str, Any]) -> None:
    many = golden["error_as_json"]["TooManyRedirectsError"]
    wire = many["as_json"]
    built = TooManyRedirectsError(
        url=wire["url"],
        http_method="get",
        duration=0.9,
        request_id=wire["request_id"],
        redirects=wire["redirects"],
        callback_args={"a": 1},
    )
    assert str(built) == many["message"]
    assert rubyjson.dumps(built.to_wire()) == rubyjson.dumps(wire)
    loop = golden["error_as_json"]["RecursiveRedirectError"]
    loaded = load_failure(loop["as_json"])
    assert isinstance(loaded, RedirectError)
    assert str(loaded) == loop["loaded_message"]


def test_golden_callback_jobs_carry_loadable_failures(golden: dict[str, Any]) -> None:
    for name in (
        "CallbackWorker_request_error",
        "CallbackWorker_http_error",
        "CallbackWorker_too_many_redirects",
    ):
        data, result_type, _callback = golden["jobs"][name]["args"]
        assert result_type == "error"
        failure = load_failure(data)
        assert rubyjson.dumps(failure.to_wire()) == rubyjson.dumps(data)


@pytest.mark.parametrize(
    "wire",
    [
        None,
        [],
        {"redirects": [], "error_class": "PatientHttp::RedirectError"},
        {"redirects": [], "error_class": "Kernel"},
        {"redirects": "x", "error_class": "PatientHttp::TooManyRedirectsError"},
        {"response": "x"},
        {"class_name": 5},
        {"backtrace": "x"},
        {"duration": "slow"},
        {"callback_args": [1]},
    ],
)
def test_malformed_failures_raise_invalid_result(wire: object) -> None:
    with pytest.raises(InvalidResultError):
        load_failure(wire)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "response",
                "redirects",
                "error_class",
                "class_name",
                "message",
                "backtrace",
                "duration",
                "url",
                "callback_args",
                "error_type",
            ]
        ),
        st.none()
        | st.integers()
        | st.text()
        | st.lists(st.text(), max_size=2)
        | st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    )
)
def test_arbitrary_json_raises_only_documented_errors(data: dict[str, Any]) -> None:
    try:
        failure = load_failure(data)
    except WireFormatError:
        return
    again = load_failure(rubyjson.loads(rubyjson.dumps(failure.to_wire())))
    assert again.to_wire() == failure.to_wire()
