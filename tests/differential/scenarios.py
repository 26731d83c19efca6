"""The requests of the differential test, in groups that share one processor configuration.

URLs hold ``{base}`` (the oracle's HTTP test server), ``{redirector}`` (a second origin that
redirects to ``?url=``) or ``{tls}`` (a TLS server nobody trusts); :func:`groups` fills them.
The payload stores' servers are ``urls["s3"]`` (moto) and ``urls["postgres"]`` (PostgreSQL's
maintenance database), given only to the groups that name them in ``store.servers``.
Every request's callback is the oracle's ``OracleCallback``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from tests.differential.aux_servers import noise
from tests.differential.harness import FileStore, Group, PostgresRows, S3Objects, SqliteRows

ENCRYPTION_KEYS = ["differential-new-key-0123456789abcdef", "differential-old-key-0123456789abcdef"]

BODIES: list[dict[str, Any]] = [
    {"name": "json", "url": "{base}/json"},
    {"name": "json_utf8", "url": "{base}/json_utf8"},
    {"name": "problem_json_422", "url": "{base}/problem"},
    {"name": "text", "url": "{base}/text?size=300"},
    {"name": "html", "url": "{base}/html"},
    {"name": "xml", "url": "{base}/xml"},
    {"name": "binary", "url": "{base}/binary?size=700"},
    {"name": "image", "url": "{base}/image"},
    {"name": "no_content_type", "url": "{base}/no_content_type"},
    {"name": "latin1", "url": "{base}/latin1"},
    {"name": "shift_jis", "url": "{base}/shift_jis"},
    {"name": "unknown_charset", "url": "{base}/unknown_charset"},
    {"name": "gzip_large", "url": "{base}/gzip?size=6000"},
    {"name": "gzip_small", "url": "{base}/gzip?size=50"},
    {"name": "chunked", "url": "{base}/chunked?size=1000&chunks=3"},
    {"name": "no_content_204", "url": "{base}/empty"},
    {"name": "status_304", "url": "{base}/status/304"},
    {"name": "multi_value_headers", "url": "{base}/headers"},
    {"name": "text_4095_bytes", "url": "{base}/text?size=4095"},
    {"name": "text_4096_bytes", "url": "{base}/text?size=4096"},
    {"name": "binary_4096_bytes", "url": "{base}/binary?size=4096"},
    {"name": "invalid_json_labelled_json", "url": "{redirector}/bad_json"},
    {"name": "close_connection", "url": "{base}/close"},
]

# Framing, header merging and charset edge cases, from the auxiliary raw server.
EDGES: list[dict[str, Any]] = [
    {"name": f"edge_{path}", "url": "{redirector}/" + path}
    for path in (
        "odd_headers", "not_modified", "empty_chunked", "content_length_0",
        "close_delimited_empty", "brotli_label", "non_ascii_no_charset", "json_upper_charset",
        "close_no_answer",
    )
] + [
    {"name": "edge_post_close_no_answer", "method": "post", "url": "{redirector}/close_no_answer",
     "json": {"a": 1}},
]  # fmt: skip

# How the gem labels a body: its text/binary and charset rules, label by label.
CONTENT_TYPES: list[dict[str, Any]] = [
    {"name": f"type_{n:02d}", "url": "{redirector}/typed?type=" + quote(label, safe="")}
    for n, label in enumerate(
        (
            'text/plain; charset="utf-8"', "text/plain; Charset=UTF-8",
            "text/plain; charset = utf-8",
            "TEXT/PLAIN; charset=utf-8", "application/vnd.api+json", "image/svg+xml",
            "application/xhtml+xml; charset=utf-8", "application/javascript",
            "application/json; charset=UTF-8", "text/csv", "text/html; charset=iso-8859-1",
            "text/plain; charset=windows-1252", "text/plain; charset=us-ascii",
            "text/plain; charset=utf-16", "application/x-www-form-urlencoded", "",
        )
    )
]  # fmt: skip

REQUESTS: list[dict[str, Any]] = [
    {
        "name": "header_case_and_unicode",
        "url": "{base}/echo",
        "headers": {"X-Mixed-Case": "v", "x-unicode": "h\u00e9llo \u2603", "X-Empty": ""},
    },
    {"name": "percent_encoded_path_and_query", "url": "{base}/echo/a%20b/c%2Fd?x=%2F&y=a+b&z"},
    {
        "name": "float_and_big_callback_args",
        "url": "{base}/json",
        "callback_args": {
            "f": 1e20,
            "g": 0.1,
            "h": 1.0,
            "i": 1.5e-7,
            "big": 12345678901234567890,
            "neg": -0.0,
            "empty": {},
            "list": [],
            "s": "\u2603\ud83d\ude80",
        },
    },
    {"name": "no_callback_args", "url": "{base}/json", "callback_args": None},
    {"name": "put_without_body", "method": "put", "url": "{base}/echo"},
    {"name": "patch_empty_body", "method": "patch", "url": "{base}/echo", "body": ""},
    {
        "name": "redirect_with_fragment",
        "url": "{redirector}/to?url=" + quote("{base}/echo?q=1#frag", safe="{}"),
    },
    {
        "name": "get_params_headers",
        "url": "{base}/echo?x=1",
        "params": {"a": "1", "b": "two words", "c": "é"},
        "headers": {"X-Trace": "abc", "Authorization": "Bearer t0ken"},
    },
    {"name": "get_no_body_echo", "url": "{base}/echo"},
    {
        "name": "post_json",
        "method": "post",
        "url": "{base}/echo",
        "json": {"w": "wörld", "n": [1, 2.5, None, True], "deep": {"a": {"b": "c"}}},
    },
    {
        "name": "post_text_body",
        "method": "post",
        "url": "{base}/echo",
        "body": "plain text body",
        "headers": {"Content-Type": "text/plain"},
    },
    {
        "name": "post_binary_body",
        "method": "post",
        "url": "{base}/echo",
        "body_base64": "AAEC/f7/",
        "headers": {"Content-Type": "application/octet-stream"},
    },
    {"name": "put_json", "method": "put", "url": "{base}/echo", "json": {"k": "v"}},
    {"name": "patch_json", "method": "patch", "url": "{base}/echo", "json": [1, 2]},
    {"name": "delete", "method": "delete", "url": "{base}/echo"},
    {"name": "custom_user_agent", "url": "{base}/echo", "headers": {"User-Agent": "mine/1.0"}},
    {
        "name": "nested_callback_args",
        "url": "{base}/json",
        "callback_args": {
            "user": {"id": 7, "tags": ["a", "b"], "meta": {"x": None, "f": 1.5}},
            "list": [{"k": 1}, [2, 3]],
            "s": "ü",
        },
    },
]

STATUSES: list[dict[str, Any]] = [
    {"name": "status_404", "url": "{base}/status/404"},
    {"name": "status_404_raise", "url": "{base}/status/404", "raise_error_responses": True},
    {"name": "status_500", "url": "{base}/status/500"},
    {"name": "status_503_raise", "url": "{base}/status/503", "raise_error_responses": True},
    {"name": "status_422_problem_raise", "url": "{base}/problem", "raise_error_responses": True},
    {"name": "status_201", "url": "{base}/status/201"},
    {"name": "status_202_raise", "url": "{base}/status/202", "raise_error_responses": True},
]

REDIRECTS: list[dict[str, Any]] = [
    {"name": "redirect_3_hops", "url": "{base}/redirect/3"},
    {"name": "absolute_redirect", "url": "{base}/absolute_redirect/2"},
    *(
        {
            "name": f"redirect_{code}_post",
            "method": "post",
            "url": f"{{base}}/redirect{code}/1",
            "json": {"a": 1},
            "headers": {"Authorization": "Bearer same-origin"},
        }
        for code in (301, 302, 303, 308)
    ),
    *(
        {"name": f"redirect_{code}_get", "url": f"{{base}}/redirect{code}/2"}
        for code in (301, 302, 303, 307, 308)
    ),
    {
        "name": "cross_origin_strips_headers",
        "method": "get",
        "url": "{redirector}/to?url=" + quote("{base}/echo", safe="{}"),
        "headers": {"Authorization": "Bearer secret", "Cookie": "a=b", "X-Keep": "kept"},
    },
    {"name": "too_many_redirects", "url": "{base}/redirect/10", "max_redirects": 2},
    {"name": "redirect_303_put", "method": "put", "url": "{base}/redirect303/1", "json": [1]},
    {"name": "redirect_302_delete", "method": "delete", "url": "{base}/redirect302/1"},
    # 308, not 307: the test server's /redirect307 leaves the body unread on a shared connection
    {"name": "redirect_308_put", "method": "put", "url": "{base}/redirect308/1", "body": "kept"},
    {"name": "redirect_loop", "url": "{base}/loop"},
    {"name": "max_redirects_zero", "url": "{base}/redirect/1", "max_redirects": 0},
    {
        "name": "redirect_then_404_raise",
        "url": "{base}/redirect302/0",
        "raise_error_responses": True,
    },
]

FAILURES: list[dict[str, Any]] = [
    # registered on neither side: both fail as the gem fails (registries: issue 14)
    {
        "name": "unknown_secret_header",
        "url": "{base}/echo",
        "headers": {"Authorization": {"$secret": "nope"}},
    },
    {"name": "unknown_secret_param", "url": "{base}/echo", "params": {"key": {"$secret": "nope"}}},
    {"name": "unknown_preprocessor", "url": "{base}/echo", "preprocessors": ["nope"]},
    {"name": "request_timeout", "url": "{base}/sleep?seconds=3", "timeout": 1},
    {"name": "connection_refused", "url": "http://127.0.0.1:1/json"},
    {"name": "connection_refused_by_name", "url": "http://localhost:1/json"},
    {"name": "connect_timeout", "url": "{blackhole}/json", "timeout": 1},
    {"name": "dns_failure", "url": "http://nonexistent-host.invalid/json"},
    {"name": "tls_verify_failure", "url": "{tls}/x"},
]

# Alone in their groups: what they test depends on which connection each hop gets.
STALE_CONNECTION: list[dict[str, Any]] = [
    {
        "name": "redirect_307_post_stale_body",
        "method": "post",
        "url": "{base}/redirect307/1",
        "json": {"a": 1},
    },
]
DEVIATIONS: list[dict[str, Any]] = [
    {
        "name": "deflate",
        "url": "{base}/deflate?size=500",
        "deviation": "the gem keeps the deflate bytes as a UTF-8 body, cannot generate the "
        "callback's JSON and drops the result (logs JSON::GeneratorError); we inflate it",
    },
    {
        "name": "invalid_utf8_labelled_utf8",
        "url": "{redirector}/invalid_utf8",
        "deviation": "the gem cannot generate the callback's JSON for bytes invalid in the "
        "declared charset and drops the result; we deliver the body as binary",
    },
]

# TLS with ALPN h2 (hypercorn, a CA both sides trust in this group only).
HTTP2: list[dict[str, Any]] = [
    {"name": "h2_get_echo", "url": "{h2}/echo?x=1", "headers": {"X-Trace": "abc"}},
    {"name": "h2_post_json", "method": "post", "url": "{h2}/echo", "json": {"k": "v"}},
    {"name": "h2_status_404", "url": "{h2}/status/404"},
    {"name": "h2_status_500_raise", "url": "{h2}/status/500", "raise_error_responses": True},
    {"name": "h2_status_204", "url": "{h2}/status/204"},
    {"name": "h2_gzip", "url": "{h2}/gzip"},
    {"name": "h2_multi_headers", "url": "{h2}/multi"},
    {"name": "h2_redirects", "url": "{h2}/redirect/2"},
    {"name": "h2_latin1", "url": "{h2}/charset"},
    {"name": "h2_big_with_length", "url": "{h2}/big?bytes=3000&length=1"},
    {"name": "h2_big_streamed", "url": "{h2}/big?bytes=3000&length=0"},
    {"name": "h2_slow_timeout", "url": "{h2}/slow?seconds=3", "timeout": 1},
    {"name": "h2_slow_body_timeout", "url": "{h2}/slow-body?seconds=3", "timeout": 1},
    {"name": "http_to_https_strips_credentials", "url": "{redirector}/to?url="
     + quote("{h2}/echo", safe="{}"), "headers": {"Authorization": "Bearer x", "X-Keep": "1"}},
]  # fmt: skip

# HTTP/1.1 over TLS (the auxiliary server offers no h2): framing and end-of-stream cases where
# TLS changes what a read sees (a close with or without close_notify, close-delimited bodies).
TLS_HTTP1: list[dict[str, Any]] = [
    {**edge, "name": "tls_" + edge["name"], "url": edge["url"].replace("{redirector}", "{tls}")}
    for edge in EDGES
] + [
    {"name": "tls_large_response", "url": "{tls}/noise?size=3000"},
    {"name": "tls_typed_latin1", "url": "{tls}/typed?type=" + quote("text/plain; charset=latin1")},
    {"name": "tls_redirect_to_plain", "url": "{tls}/to?url=" + quote("{base}/echo", safe="{}")},
]  # fmt: skip

BATCH: list[dict[str, Any]] = [
    {
        "name": f"batch_{n:02d}",
        "url": "{base}/echo",
        "params": {"n": str(n)},
        "callback_args": {"n": n},
    }
    for n in range(20)
]

# Processor-level options: the same settings given to the gem and to patient-sidekiq run.
OPTIONS_GEM = {
    "request_timeout": 1.5,
    "max_redirects": 1,
    "user_agent": "Differential/1.0",
    "raise_error_responses": True,
    "max_response_size": 1000,
}
OPTIONS_OURS = (
    "--request-timeout", "1.5",
    "--max-redirects", "1",
    "--user-agent", "Differential/1.0",
    "--raise-error-responses",  # a switch: no value
    "--max-response-size", "1000",
)  # fmt: skip
OPTIONS: list[dict[str, Any]] = [
    {"name": "opt_user_agent", "url": "{base}/echo"},
    {"name": "opt_timeout", "url": "{base}/sleep?seconds=3"},
    {"name": "opt_request_timeout_wins", "url": "{base}/sleep?seconds=2", "timeout": 3},
    {"name": "opt_max_redirects", "url": "{base}/redirect/3"},
    {"name": "opt_request_max_redirects_wins", "url": "{base}/redirect/3", "max_redirects": 5},
    {"name": "opt_raise_404", "url": "{base}/status/404"},
    {"name": "opt_too_large_with_length", "url": "{base}/text?size=5000"},
    {"name": "opt_too_large_chunked", "url": "{base}/chunked?size=5000&chunks=5"},
    {"name": "opt_too_large_gzip", "url": "{base}/gzip?size=5000"},
    {"name": "opt_just_fits", "url": "{base}/text?size=1000"},
]

PAYLOADS: list[dict[str, Any]] = [
    # far under the threshold even encrypted (a duration's digits vary the size a little)
    {"name": "small", "url": "{base}/fast", "callback_args": {"k": "v"}},
    # noise does not compress: these stay over the 1000-byte store threshold once gzipped
    {"name": "large_response", "url": "{redirector}/noise?size=3000"},
    {"name": "large_error", "url": "{redirector}/noise?size=3000", "raise_error_responses": True,
     "headers": {"X-Ignored": "x"}},
    {"name": "large_request", "method": "post", "url": "{base}/echo",
     "json": {"blob": noise(1500).hex()}},
    {"name": "large_callback_args", "url": "{base}/json",
     "callback_args": {"blob": noise(1500).hex()}},
]  # fmt: skip


PAYLOAD_STORE_OURS = ("--payload-store", "redis=redis", "--payload-store-threshold", "1000")


def _fill(requests: list[dict[str, Any]], urls: dict[str, str]) -> tuple[dict[str, Any], ...]:
    out = []
    for request in requests:
        filled = dict(request)
        url = str(filled["url"])
        for name, value in urls.items():
            url = url.replace("{" + name + "}", value)
            url = url.replace(quote("{" + name + "}", safe=""), quote(value, safe=""))
        filled["url"] = url
        out.append(filled)
    return tuple(out)


# Registered secrets: the gem's register_secret on one side, our [secrets] configuration
# (environment variables) and a callable registered in code on the other.
SECRETS_GEM: dict[str, Any] = {
    "token": "Bearer tok-1",
    "api_key": "k y&z/é",
    "lazy": {"lazy": "lazy-v"},
}
SECRETS_OURS: tuple[str, ...] = (
    "--secret", "token=env:DIFF_SECRET_TOKEN",
    "--secret", "api_key=env:DIFF_SECRET_API_KEY",
    "-r", "tests.differential.python_side",
)  # fmt: skip
SECRETS_OURS_ENV = {"DIFF_SECRET_TOKEN": "Bearer tok-1", "DIFF_SECRET_API_KEY": "k y&z/é"}

SECRETS: list[dict[str, Any]] = [
    {"name": "secret_header", "url": "{base}/echo",
     "headers": {"Authorization": {"$secret": "token"}, "X-Plain": "p"}},
    {"name": "secret_param", "url": "{base}/echo?a=1", "params": {"key": {"$secret": "api_key"}}},
    {"name": "secret_params_and_plain", "url": "{base}/echo",
     "params": {"plain": "x y", "key": {"$secret": "api_key"}, "z": 1}},
    {"name": "lazy_secret", "url": "{base}/echo", "headers": {"X-Lazy": {"$secret": "lazy"}}},
    {"name": "secret_post", "method": "post", "url": "{base}/echo", "json": {"a": 1},
     "headers": {"X-Key": {"$secret": "api_key"}}},
    # a same-origin hop resolves the header again; secret params are not carried over
    {"name": "secret_same_origin_redirect", "url": "{base}/redirect/2",
     "headers": {"Authorization": {"$secret": "token"}}, "params": {"key": {"$secret": "api_key"}}},
    # a cross-origin hop drops authorization but keeps (and resolves again) other secrets
    {"name": "secret_cross_origin_redirect",
     "url": "{redirector}/to?url=" + quote("{base}/echo", safe="{}"),
     "headers": {"Authorization": {"$secret": "token"}, "X-Key": {"$secret": "api_key"}}},
    {"name": "secret_unknown_beside_known", "url": "{base}/echo",
     "headers": {"Authorization": {"$secret": "token"}, "X-Other": {"$secret": "missing"}}},
]  # fmt: skip

# Registered preprocessors: the oracle's Ruby examples and their Python twins
# (python_side.py), in both orders, with bodies, secrets and redirects.
PREPROCESSORS: list[dict[str, Any]] = [
    {"name": "hmac_get", "url": "{base}/echo?q=1", "preprocessors": ["hmac_sign"]},
    {"name": "hmac_post_body", "method": "post", "url": "{base}/echo", "body": "payload é",
     "preprocessors": ["hmac_sign"]},
    {"name": "sign_then_param", "url": "{base}/echo", "preprocessors": ["hmac_sign", "add_param"]},
    {"name": "param_then_sign", "url": "{base}/echo", "preprocessors": ["add_param", "hmac_sign"]},
    {"name": "preprocessor_sees_resolved_secret_params", "url": "{base}/echo",
     "params": {"key": {"$secret": "api_key"}}, "preprocessors": ["add_param", "hmac_sign"]},
    {"name": "preprocessors_rerun_on_same_origin_hops", "url": "{base}/redirect/2",
     "preprocessors": ["add_param", "hmac_sign"]},
    {"name": "preprocessors_dropped_cross_origin",
     "url": "{redirector}/to?url=" + quote("{base}/echo", safe="{}"),
     "preprocessors": ["add_param", "hmac_sign"]},
    {"name": "known_then_unknown_preprocessor", "url": "{base}/echo",
     "preprocessors": ["add_param", "nope"]},
]  # fmt: skip


def groups(urls: dict[str, str]) -> list[Group]:
    """Every group, with the servers' base URLs filled in."""
    payload_env = {"ORACLE_PAYLOAD_STORE": "redis", "ORACLE_PAYLOAD_THRESHOLD": "1000"}
    return [
        Group("bodies", _fill(BODIES, urls)),
        Group("content_types", _fill(CONTENT_TYPES, urls)),
        Group(
            "edges",
            _fill(EDGES, urls),
            gem_config={"request_timeout": 5},
            ours=("--request-timeout", "5"),
        ),
        Group("requests", _fill(REQUESTS, urls)),
        Group("statuses", _fill(STATUSES, urls)),
        Group("redirects", _fill(REDIRECTS, urls)),
        Group("failures", _fill(FAILURES, urls)),
        Group("stale_connection", _fill(STALE_CONNECTION, urls)),
        Group("deviations", _fill(DEVIATIONS, urls)),
        Group("batch", _fill(BATCH, urls)),
        Group(
            "tls_http1",
            _fill(TLS_HTTP1, urls),
            # as the plain edges group: json_upper_charset's body is a byte short of its length
            gem_config={"request_timeout": 5},
            ours=("--ca-bundle", urls.get("ca_file", ""), "--request-timeout", "5"),
            oracle_env={"SSL_CERT_FILE": urls.get("ca_file", "")},
        ),
        Group(
            "tls_http2",
            _fill(HTTP2, urls),
            ours=("--ca-bundle", urls.get("ca_file", "")),
            oracle_env={"SSL_CERT_FILE": urls.get("ca_file", "")},
        ),
        Group("options", _fill(OPTIONS, urls), gem_config=OPTIONS_GEM, ours=OPTIONS_OURS),
        Group(
            "encryption_one_key",
            _fill(PAYLOADS[:2], urls),
            ours=("--encryption-key", ENCRYPTION_KEYS[0]),
            oracle_env={"ORACLE_ENCRYPTION_KEY": ENCRYPTION_KEYS[0]},
        ),
        Group(
            "encryption_rotation",
            _fill(PAYLOADS[:2], urls),
            ours=("--encryption-key", ENCRYPTION_KEYS[0], "--encryption-key", ENCRYPTION_KEYS[1]),
            oracle_env={"ORACLE_ENCRYPTION_KEY": json.dumps(ENCRYPTION_KEYS)},
        ),
        Group(
            "redis_payload_store",
            _fill(PAYLOADS, urls),
            ours=PAYLOAD_STORE_OURS,
            oracle_env=payload_env,
        ),
        Group(
            "redis_payload_store_prefix_ttl",
            _fill(PAYLOADS, urls),
            ours=(
                "--payload-store=big=redis:key_prefix=app:payloads:&ttl=600",
                "--payload-store-threshold=1000",
            ),
            oracle_env={
                **payload_env,
                "ORACLE_PAYLOAD_STORE_NAME": "big",
                "ORACLE_PAYLOAD_KEY_PREFIX": "app:payloads:",
                "ORACLE_PAYLOAD_TTL": "600",
            },
        ),
        Group("file_payload_store", _fill(PAYLOADS, urls), store=FileStore()),
        Group("s3_payload_store", _fill(PAYLOADS, urls), store=S3Objects(urls.get("s3", ""))),
        Group("active_record_payload_store", _fill(PAYLOADS, urls), store=SqliteRows()),
        Group(
            "active_record_payload_store_postgresql",
            _fill(PAYLOADS, urls),
            store=PostgresRows(urls.get("postgres", "")),
        ),
        Group(
            "secrets",
            _fill(SECRETS, urls),
            ours=SECRETS_OURS,
            ours_env=SECRETS_OURS_ENV,
            oracle_env={"ORACLE_SECRETS_JSON": json.dumps(SECRETS_GEM)},
        ),
        Group(
            "preprocessors",
            _fill(PREPROCESSORS, urls),
            ours=SECRETS_OURS,
            ours_env=SECRETS_OURS_ENV,
            oracle_env={
                "ORACLE_SECRETS_JSON": json.dumps(SECRETS_GEM),
                "ORACLE_PREPROCESSORS": "hmac_sign,add_param",
            },
        ),
        Group(
            "custom_encryption",
            _fill([*PAYLOADS[:2], *SECRETS[:1]], urls),
            boot="custom_encryption_boot.rb",
            ours=SECRETS_OURS,
            ours_env={**SECRETS_OURS_ENV, "DIFFERENTIAL_CUSTOM_ENCRYPTION": "1"},
            oracle_env={"ORACLE_SECRETS_JSON": json.dumps(SECRETS_GEM)},
        ),
        Group(
            "redis_payload_store_encrypted",
            _fill(PAYLOADS, urls),
            ours=(*PAYLOAD_STORE_OURS, "--encryption-key", ENCRYPTION_KEYS[0]),
            oracle_env={**payload_env, "ORACLE_ENCRYPTION_KEY": ENCRYPTION_KEYS[0]},
        ),
    ]
