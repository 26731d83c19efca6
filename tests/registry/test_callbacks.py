"""The callback registry: names, decorator forms, refusals, and callback name resolution."""

from __future__ import annotations

import pytest

from patient_sidekiq.errors import ConfigurationError, PatientSidekiqError, UnknownCallbackError
from patient_sidekiq.registry import callbacks
from patient_sidekiq.registry.callbacks import (
    CallbackRegistry,
    is_ruby_constant_name,
    python_path,
    resolve_callback_name,
)
from patient_sidekiq.wire.failures import RequestError
from patient_sidekiq.wire.response import Response


class FetchInvoice:
    def on_complete(self, response: Response) -> None:
        pass

    def on_error(self, error: RequestError) -> None:
        pass


class AsyncCallback:
    async def on_complete(self, response: Response) -> None:
        pass

    async def on_error(self, error: RequestError) -> None:
        pass


class Other:
    def on_complete(self, response: Response) -> None:
        pass

    def on_error(self, error: RequestError) -> None:
        pass


FETCH_PATH = "tests.registry.test_callbacks.FetchInvoice"


@pytest.mark.parametrize(
    "name", ["Foo", "Foo::Bar", "::Foo", "::Foo::Bar2", "A_b::C", "Billing::FetchInvoiceCallback"]
)
def test_ruby_constant_names(name: str) -> None:
    assert is_ruby_constant_name(name)


@pytest.mark.parametrize(
    "name",
    ["", "foo", "Foo::", "Foo::bar", "foo.Bar", "tests.Foo", "Foo Bar", "Foo:Bar", "::", ":::Foo",
     "Foo::::Bar", "Ünï", "Foo\n", "1Foo"],
)  # fmt: skip
def test_not_ruby_constant_names(name: str) -> None:
    assert not is_ruby_constant_name(name)


def test_registered_under_ruby_name_and_python_path() -> None:
    registry = CallbackRegistry()
    assert registry.register(FetchInvoice, "Billing::FetchInvoiceCallback") is FetchInvoice
    assert registry.get("Billing::FetchInvoiceCallback") is FetchInvoice
    assert registry.get("::Billing::FetchInvoiceCallback") is FetchInvoice
    assert registry.get(FETCH_PATH) is FetchInvoice
    assert python_path(FetchInvoice) == FETCH_PATH
    assert registry.names() == ("Billing::FetchInvoiceCallback", FETCH_PATH)
    assert "Billing::FetchInvoiceCallback" in registry
    assert FETCH_PATH in registry
    assert FetchInvoice in registry
    assert Other not in registry
    assert "Other" not in registry
    assert 42 not in registry
    assert registry.get("Nope") is None
    assert registry.job_name(FetchInvoice) == "Billing::FetchInvoiceCallback"


def test_decorator_forms() -> None:
    registry = CallbackRegistry()

    @registry.callback
    class Bare(FetchInvoice):
        pass

    @registry.callback()
    class Called(FetchInvoice):
        pass

    @registry.callback("Billing::Named")
    class Named(AsyncCallback):
        pass

    assert registry.get(python_path(Bare)) is Bare
    assert registry.get(python_path(Called)) is Called
    assert registry.get("Billing::Named") is Named
    assert registry.get(python_path(Named)) is Named
    assert registry.job_name(Bare) == python_path(Bare)
    assert registry.job_name(Named) == "Billing::Named"


def test_module_level_default_registry() -> None:
    assert isinstance(callbacks.registry, CallbackRegistry)
    assert callbacks.callback == callbacks.registry.callback


def test_class_without_callback_methods_is_refused_at_decoration() -> None:
    registry = CallbackRegistry()
    with pytest.raises(ConfigurationError, match="on_error"):

        @registry.callback("Half")
        class Half:
            def on_complete(self, response: Response) -> None:
                pass

    with pytest.raises(ConfigurationError, match="on_complete and on_error"):

        @registry.callback
        class Empty:
            pass

    class NotCallable:
        on_complete = 1
        on_error = "x"

    with pytest.raises(ConfigurationError, match="on_complete and on_error"):
        registry.register(NotCallable)
    with pytest.raises(ConfigurationError, match="must be a class"):
        registry.register(FetchInvoice(), "X")  # type: ignore[type-var]
    assert registry.names() == ()


def test_a_taken_name_is_refused_for_another_class() -> None:
    registry = CallbackRegistry()
    registry.register(FetchInvoice, "Billing::Fetch")
    taken = r"already registered for tests\.registry\.test_callbacks"
    with pytest.raises(ConfigurationError, match=taken):
        registry.register(Other, "Billing::Fetch")
    # Nothing of the refused registration is kept.
    assert Other not in registry
    assert python_path(Other) not in registry
    with pytest.raises(ConfigurationError, match="already registered"):
        registry.register(Other, "::Billing::Fetch")


def test_same_class_again_is_idempotent_and_aliases_keep_the_first_name() -> None:
    registry = CallbackRegistry()
    registry.register(FetchInvoice)
    assert registry.job_name(FetchInvoice) == FETCH_PATH
    registry.register(FetchInvoice, "Billing::Fetch")
    assert registry.job_name(FetchInvoice) == "Billing::Fetch"  # a Ruby name wins over the path
    registry.register(FetchInvoice, "Billing::FetchAlias")
    registry.register(FetchInvoice, "Billing::Fetch")
    assert registry.job_name(FetchInvoice) == "Billing::Fetch"
    assert registry.get("Billing::FetchAlias") is FetchInvoice
    assert registry.names() == (FETCH_PATH, "Billing::Fetch", "Billing::FetchAlias")


@pytest.mark.parametrize("name", ["billing.fetch", "fetch", "", "Foo::bar"])
def test_explicit_names_must_be_ruby_constant_names(name: str) -> None:
    registry = CallbackRegistry()
    with pytest.raises(ConfigurationError, match="not a Ruby class name"):
        registry.register(FetchInvoice, name)


def test_resolve_registered_class_and_names() -> None:
    registry = CallbackRegistry()
    registry.register(FetchInvoice, "Billing::Fetch")
    registry.register(Other)
    assert resolve_callback_name(FetchInvoice, registry) == "Billing::Fetch"
    assert resolve_callback_name(Other, registry) == python_path(Other)
    assert resolve_callback_name(python_path(Other), registry) == python_path(Other)
    assert resolve_callback_name("Billing::Fetch", registry) == "Billing::Fetch"
    # A Ruby class name nobody registered in Python: a Ruby process runs it.
    assert resolve_callback_name("RubyOnly::Callback", registry) == "RubyOnly::Callback"
    assert resolve_callback_name("::RubyOnly", registry) == "::RubyOnly"


def test_resolve_refuses_what_nobody_could_run() -> None:
    registry = CallbackRegistry()
    with pytest.raises(UnknownCallbackError, match="FetchInvoice is not registered in Python"):
        resolve_callback_name(FetchInvoice, registry)
    with pytest.raises(UnknownCallbackError) as info:
        resolve_callback_name("foo.bar", registry)
    assert str(info.value) == (
        "callback 'foo.bar' is not registered in Python (use @patient_sidekiq.callback) "
        "and is not a Ruby class name"
    )
    with pytest.raises(UnknownCallbackError):
        resolve_callback_name("", registry)
    with pytest.raises(UnknownCallbackError):
        resolve_callback_name(3, registry)  # type: ignore[arg-type]


def test_unknown_callback_error_is_an_argument_error_for_ruby() -> None:
    assert issubclass(UnknownCallbackError, PatientSidekiqError)
    assert UnknownCallbackError.ruby_class_name == "ArgumentError"
